//! The Lua scripts of the shared limiter, one atomic step each, all on Redis's own clock
//! (`TIME`), so worker clocks do not matter. Every script's keys belong to one limit key
//! and share its `{hash tag}`, so they run on Redis Cluster too.
//!
//! Per limit key (an IP, or egress and IP):
//! - `…:tat`: the GCRA "theoretical arrival time", fractional ms;
//! - `…:inflight`: sorted set of in-flight lease ids scored by expiry (ms);
//! - `…:queue`: hash of the key's line of deferred jobs: `last`, the place (ms) given to
//!   the last job deferred (the next one is told a place one interval later, so deferred
//!   jobs come back spread at the key's rate instead of all at once); `start`, the place
//!   of the line's first job; `seen`, when a job back for its place last booked. A line
//!   is live while its last place is ahead and its jobs have come back within the grace
//!   of when they were due; a fresh job joins a live line instead of going ahead of it;
//! - `…:standing`: hash of our standing with the IP (`limit::standing`): `level`,
//!   `until` (end of the back-off hold), `last` (last refusal or step down), `ok` (the
//!   last time a reporting worker had an answer from it), `srv` and `srvc` (when the
//!   server itself last refused us, and how: `Signal::code`), `r:<host>` (a refusal from
//!   that host, ms), `c:<host>` (when a refusal of that host was last taken for one of
//!   us), `hold:<host>` (that host's `Retry-After`, until ms) and `ours:<host>` (our own
//!   hold on that host after a refusal right after a burst, until ms); `pause` (until when
//!   the IP is paused because several of its hosts are held at once); `fine` (any
//!   worker's last answer, from `ANSWERED`); `sent` (the last slot booked while the
//!   IP is backed off, ms: `BOOK` tells whether the next is at our pace); `qs` and `qsc`
//!   (when a storm before any answer began, and its code when the server's own, or -1).

/// Books a request. KEYS: tat, inflight, standing, queue. ARGV: interval_ms, burst,
/// max_inflight, max_wait_ms, lease_ms, lease_id, host, pace_ms (the worker's smoothed
/// answer latency of the IP: the least spacing, with no burst, when it is wider),
/// carry_ms (how far ahead of now the worker's local fallback has booked the IP; 0 for
/// nothing), max_defer_ms, line (0: the request is outside the line, 1: a fresh job's,
/// 2: the first of a job back for its place, 3: the same on its last deferral, which
/// takes no new place), grace_ms (see `…:queue` above), max_pause_ms (the longest
/// pause the host asked for, `Retry-After`, that is waited out; a hold of ours is waited
/// out up to max_wait_ms), pace_window_ms (`limit::PACE_WINDOW`), alone (1: booked only
/// when the in-flight set holds no other lease, `Request::alone`).
/// Returns {1, wait_ms, level, again, paced, out, booked} booked, again 1 when the host refused again
/// after holds (field `a:<host>`: an answer from it mends it, [`MENDED`]), paced 1 when
/// the IP is backed off and the slot comes within pace_window_ms of the one before
/// (field `sent`, kept while backed off: `Permit::at_our_pace`), out the leases of the
/// IP's set beside the new one, any worker's (`Permit::beside`), booked the arrival time
/// it left in µs (`Permit::booked`); {-1, wait_ms, level,
/// 0, 0} would wait too long (nothing booked; wait_ms is the job's place in the key's
/// line of deferred jobs, kept when it is no further than max_defer_ms); {0, 0, level,
/// 0, 0} in-flight cap reached (nothing booked); {2, wait_ms, 0, 0, 0} the host is held
/// for wait_ms more (nothing booked: ask again then); {-2, wait_ms, 0, 0, 0} the same,
/// longer than may be waited (nothing booked: the job is answered without asking).
/// A backed-off IP is asked at interval·2^level with no burst, and has one request in
/// flight whatever max_inflight says (a connection limit may be what refused us). A
/// lease expires `lease` from now; its worker renews it while the request waits and
/// runs.
///
/// The arrival time is first raised to now + carry_ms: slots a worker granted on its
/// fallback while Redis was away (or failing over, when the new primary may have lost
/// the last writes) are still running, and booking over them would let the IP see
/// both.
pub(crate) const BOOK: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local carried = now + tonumber(ARGV[9])
if carried > tat and carried > now then
  tat = carried
  redis.call('SET', KEYS[1], string.format('%.3f', tat), 'PX', math.ceil(tat - now) + 1000)
end
local st = redis.call('HMGET', KEYS[3], 'level', 'hold:' .. ARGV[7], 'ours:' .. ARGV[7], 'pause',
  'a:' .. ARGV[7], 'sent')
-- The IP's pause while several of its hosts are held is a pause they asked for.
local asked = math.max(tonumber(st[2] or '0'), tonumber(st[4] or '0'))
local held = math.max(asked, tonumber(st[3] or '0'))
if held > now then
  local left = math.ceil(held - now)
  if left > tonumber(ARGV[4]) or math.ceil(asked - now) > tonumber(ARGV[13]) then
    return {-2, left, 0, 0, 0}
  end
  return {2, left, 0, 0, 0}
end
local level = tonumber(st[1] or '0')
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
if level > 0 then
  interval = interval * 2 ^ level
  burst = 1
end
local pace = tonumber(ARGV[8])
if pace > interval then
  interval = pace
  burst = 1
end
if tat < now then tat = now end
local new_tat = tat + interval
local wait = new_tat - interval * burst - now
if wait < 0 then wait = 0 end
local q = redis.call('HMGET', KEYS[4], 'last', 'start', 'seen')
local last = tonumber(q[1] or '0')
local start = tonumber(q[2] or '0')
local grace = math.max(tonumber(ARGV[12]), 2 * interval)
local live = last > now and now <= math.max(start, tonumber(q[3] or '0')) + grace
-- The rate decides first: a job that would wait too long anyway is told so at once,
-- instead of polling for an in-flight slot until its max_wait runs out. A fresh job
-- joins a live line rather than take the slots its places were given for.
if wait > tonumber(ARGV[4]) or (ARGV[11] == '1' and live) then
  local place = now + wait
  if live then
    if last + interval > place then place = last + interval end
  else
    start = place
  end
  local ahead = place - now
  if ahead <= tonumber(ARGV[10]) and ARGV[11] ~= '3' then
    redis.call('HSET', KEYS[4], 'last', string.format('%.3f', place), 'start', string.format('%.3f', start))
    redis.call('PEXPIRE', KEYS[4], math.ceil(ahead + grace) + 1000)
  end
  return {-1, math.ceil(ahead), level, 0, 0}
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local cap = tonumber(ARGV[3])
if level > 0 or ARGV[15] == '1' then cap = 1 end
local out = redis.call('ZCARD', KEYS[2])
if out >= cap then
  return {0, 0, level, 0, 0}
end
redis.call('SET', KEYS[1], string.format('%.3f', new_tat), 'PX', math.ceil(new_tat - now) + 1000)
local lease = tonumber(ARGV[5])
redis.call('ZADD', KEYS[2], now + lease, ARGV[6])
redis.call('PEXPIRE', KEYS[2], lease + 1000)
if (ARGV[11] == '2' or ARGV[11] == '3') and live then
  redis.call('HSET', KEYS[4], 'seen', string.format('%.3f', now))
end
local again = 0
if st[5] then again = 1 end
-- A backed-off IP's slot within pace_window_ms of the one before, any worker's (one
-- a second exactly, rounded to the ms, is not).
local paced = 0
if level > 0 then
  local slot = now + wait
  if slot - tonumber(st[6] or '-1e18') < tonumber(ARGV[14]) - 1 then paced = 1 end
  redis.call('HSET', KEYS[3], 'sent', string.format('%.3f', slot))
end
return {1, math.ceil(wait), level, again, paced, out, math.floor(new_tat * 1000)}
";

/// Whether a hold runs now on a host or its IP: the host's (asked or ours), the IP's
/// back-off after a refusal of us, or its pause while several of its hosts are held. KEYS: standing. ARGV: host. Returns 1 or 0. Asked by
/// a request that booked its slot and waited for it: a hold that began meanwhile stands.
pub(crate) const HELD: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local st = redis.call('HMGET', KEYS[1], 'until', 'pause', 'hold:' .. ARGV[1], 'ours:' .. ARGV[1])
for i = 1, 4 do
  if tonumber(st[i] or '0') > now then return 1 end
end
return 0
";

/// Marks a key's node alive for a second. KEYS: alive. Returns 1. A script that writes,
/// as booking is: a Redis that answers other calls but refuses scripts (an ACL) or writes
/// (at its `maxmemory`) is not taken for back.
pub(crate) const ALIVE: &str = r"
redis.call('SET', KEYS[1], '1', 'PX', 1000)
return 1
";

/// Renews leases. KEYS: inflight. ARGV: lease_ms, then the lease ids. Its worker renews
/// only leases whose requests still wait or run, so one missing from the set was lost by
/// Redis (restarted without its data, flushed, evicted, or expired while its worker
/// stalled): it is put back, whatever else the set holds now (a booking after the loss
/// makes the set again before this runs), so that bookings count it again. The leases
/// put back are returned: one whose request ended since the worker's snapshot (its
/// release may have come first) is released again at once.
pub(crate) const RENEW: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local lease = tonumber(ARGV[1])
local back = {}
for i = 2, #ARGV do
  if redis.call('ZADD', KEYS[1], now + lease, ARGV[i]) == 1 then
    back[#back + 1] = ARGV[i]
  end
end
redis.call('PEXPIRE', KEYS[1], lease + 1000)
return back
";

/// A host is held. KEYS: tat, standing. ARGV: pause_ms, interval_ms, burst, host,
/// storm_hosts, kind (`hold`: the host asked, `Retry-After`; `ours`: our own hold).
/// Holds the host (the field of the other kind is dropped); when `storm_hosts` hosts
/// asked for a pause at once, the whole IP too (field `pause`, and the arrival time
/// pushed), until the earliest of their holds ends. Returns the hosts that asked.
pub(crate) const HOLD: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local pause = tonumber(ARGV[1])
local other = 'hold:'
if ARGV[6] == 'hold' then other = 'ours:' end
redis.call('HDEL', KEYS[2], other .. ARGV[4])
redis.call('HSET', KEYS[2], ARGV[6] .. ':' .. ARGV[4], string.format('%.3f', now + pause))
local all = redis.call('HGETALL', KEYS[2])
local active = 0
local earliest = nil
for i = 1, #all, 2 do
  local kind = string.sub(all[i], 1, 5)
  if kind == 'hold:' or kind == 'ours:' then
    local u = tonumber(all[i + 1])
    if u <= now then
      redis.call('HDEL', KEYS[2], all[i])
    elseif kind == 'hold:' then
      active = active + 1
      if earliest == nil or u < earliest then earliest = u end
    end
  end
end
if active >= tonumber(ARGV[5]) then
  redis.call('HSET', KEYS[2], 'pause', string.format('%.3f', earliest))
  local held = earliest + tonumber(ARGV[2]) * (tonumber(ARGV[3]) - 1)
  local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
  if held > tat then
    redis.call('SET', KEYS[1], string.format('%.3f', held), 'PX', math.ceil(held - now) + 1000)
  end
end
redis.call('PEXPIRE', KEYS[2], math.ceil(pause) + 3600000)
return active
";

/// A host refused us (403/429/503, a reset, a connection refused, timed out or closed).
/// KEYS: tat, standing. ARGV: host, recent_ok (1 when the reporting worker had an answer
/// from the IP lately), refusal_window_ms, ok_window_ms, storm_hosts, backoff_ms,
/// max_hold_ms, max_level, after_hold (how a refusal after a hold is read,
/// `standing::AfterHold`: 0 a refusal of us, 1 unused (it was the site's failure unless a
/// ban may follow the server's refusal of us), 2 the site's unless the IP answered since the hold
/// ended, 3 the site's unless either, 4 the site's unless a ban may follow the
/// server's refusal of us by a status or page naming us: not a 503, a request held or
/// left unanswered; 5 a refusal of us that, while the IP is backed off, no host's
/// refusing before makes "again": a request held open right behind others of ours; 6 a
/// refusal of us once the IP ever answered us, else the site's: resets; 7 a refusal of
/// us until the holds at levels 1 to the level add up to limit_memory_ms, then the
/// site's: a limit-like refusal a neighbour met too, `Signal::NeighbourToo`; 8 a refusal
/// of us while a ban may follow the server's refusal of us, and until a hold lasted
/// drop_memory_ms, or one host's alone once the IP answered since the hold: connections
/// timing out or refused),
/// ok_age_ms (how long ago the
/// reporting worker last had an answer from the IP; -1 for never; any worker's answer
/// that `ANSWERED` noted in field `fine` counts too), ban_memory_ms (`standing::BAN_MEMORY`), server_code (the signal's
/// code when the server itself refused us, else -1), again_times
/// (`standing::AGAIN_TIMES`), again_over_ms (`standing::AGAIN_OVER`), limit_like (1 when
/// the signal is what a limit still counting an earlier burst answers:
/// `Signal::refuses_like_a_limit`; a storm of those before any answer lately is held
/// once, `by` -4, its start kept in field `qs`, and no ban is taken to follow it nor
/// any refusal of the IP while nothing answered since), limit_memory_ms
/// (`rate_limit.limit_memory`), ban_reaction_ms (`rate_limit.ban_reaction`: an answer
/// since the hold that came sooner after the server's refusal does not rule a ban out),
/// drop_memory_ms (`rate_limit.drop_memory`).
/// Returns {0, 0, 0, hosts, -1} not (yet) a refusal of us; {1, hold_ms, level, hosts,
/// by} a refusal of us: the IP is held until the back-off hold ends (a new, doubled hold
/// only once the running one is over: one storm, one step); `by` is the code of the
/// server's refusal a ban follows, or -1; or -2 with hold_ms 0: a host whose refusal was
/// taken for one of us before (field `c:<host>`, kept ban_memory_ms) refuses again
/// after the hold while the IP answers (`standing::again_while_answering`), at any
/// level, and the hold is not stepped up. A host that did so in again_times checks
/// over again_over_ms (fields `a:<host>`, and `f:<host>` the first time) is failing:
/// {0, 0, 0, hosts, -3} once no hold runs, its refusal counted in no storm, until it
/// answers ([`MENDED`]).
pub(crate) const REFUSE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local s = KEYS[2]
if ARGV[2] == '1' then redis.call('HSET', s, 'ok', string.format('%.3f', now)) end
-- A host that refused again in ARGV[13] checks over ARGV[14] ms (a:<host> = 'last:times',
-- f:<host> = the first) is failing: its refusal is its own, even first after a hold, and
-- makes no storm with others' (noted nowhere but in a:<host>).
local known = redis.call('HMGET', s, 'a:' .. ARGV[1], 'f:' .. ARGV[1], 'until')
if known[1] and now >= tonumber(known[3] or '0') then
  local sep = string.find(known[1], ':', 1, true)
  local last = tonumber(string.sub(known[1], 1, sep - 1))
  local times = tonumber(string.sub(known[1], sep + 1))
  local first = tonumber(known[2] or last)
  if times >= tonumber(ARGV[13]) and last - first >= tonumber(ARGV[14])
    and now - last < tonumber(ARGV[11]) then
    redis.call('HSET', s, 'a:' .. ARGV[1], string.format('%.3f:%d', now, times))
    redis.call('PEXPIRE', s, 3600000)
    return {0, 0, 0, 0, -3}
  end
end
redis.call('HSET', s, 'r:' .. ARGV[1], string.format('%.3f', now))
local all = redis.call('HGETALL', s)
local f = {}
local hosts = 0
-- Of them, those since the hold ended (field until).
local hosts_since = 0
local ended = tonumber(known[3] or '0')
local storm = {}
for i = 1, #all, 2 do
  f[all[i]] = all[i + 1]
  local kind = string.sub(all[i], 1, 2)
  if kind == 'r:' then
    if now - tonumber(all[i + 1]) < tonumber(ARGV[3]) then
      hosts = hosts + 1
      if tonumber(all[i + 1]) >= ended then hosts_since = hosts_since + 1 end
      storm[#storm + 1] = string.sub(all[i], 3)
    else
      redis.call('HDEL', s, all[i])
    end
  elseif kind == 'c:' and now - tonumber(all[i + 1]) >= tonumber(ARGV[11]) then
    redis.call('HDEL', s, all[i])
  elseif kind == 'a:' then
    local v = all[i + 1]
    if now - tonumber(string.sub(v, 1, string.find(v, ':', 1, true) - 1)) >= tonumber(ARGV[11]) then
      redis.call('HDEL', s, all[i], 'f:' .. string.sub(all[i], 3))
      f[all[i]] = nil
    end
  end
end
redis.call('PEXPIRE', s, 3600000)
local level = tonumber(f['level'] or '0')
-- The last answer: the reporting worker's (field ok), or any worker's (field fine).
local ok = math.max(tonumber(f['ok'] or '-1e18'), tonumber(f['fine'] or '-1e18'))
local hold_end = tonumber(f['until'] or '0')
local age = tonumber(ARGV[10])
-- Answered since the hold: by the reporting worker, or by any (field fine, from ANSWERED).
local answered = f['until'] ~= nil and ((age >= 0 and now - age >= hold_end)
  or tonumber(f['fine'] or '-1e18') >= hold_end)
local srv = tonumber(f['srv'] or '-1e18')
-- Requests held open follow only a status or page naming us (not 503, which saturated
-- backends answer too, nor signals below 100, as a hanging backend's held requests).
local srvc = tonumber(f['srvc'] or '-1')
local worded = srvc >= 100 and srvc <= 599 and srvc ~= 503
-- A ban may follow the server's refusal; its own closes during the hold are the storm.
-- An answer since the hold rules it out only once it came ARGV[17] ms after the
-- refusal: a firewall's ban (fail2ban) may come later than a short hold ends.
local last_answer = math.max(age >= 0 and now - age or -1e18, tonumber(f['fine'] or '-1e18'))
local shut = ARGV[9] == '8'
local banned = (shut or (ARGV[9] == '3' and now >= hold_end)
    or (ARGV[9] == '4' and now >= hold_end and worded))
  and now - srv < tonumber(ARGV[11])
  and (not answered or (shut and last_answer - srv < tonumber(ARGV[17])))
-- A host taken for a refusal of us before (or refusing again since), refusing again
-- after the hold while the IP answers: at whatever level the answers since stepped it
-- down to.
local before = tonumber(f['c:' .. ARGV[1]] or '-1e18')
local again = not (ARGV[9] == '5' and level > 0) and now >= hold_end and answered
  and not banned and (now - before < tonumber(ARGV[11]) or f['a:' .. ARGV[1]] ~= nil)
-- A storm before any answer lately, of what a limit still counting an earlier burst
-- from our address answers (ARGV[15] = '1'), is held once to tell it from the server
-- failing on every host.
local after_ok = now - ok < tonumber(ARGV[4])
if level == 0 and not again and not (hosts >= tonumber(ARGV[5]) and (after_ok or ARGV[15] == '1')) then
  return {0, 0, 0, hosts, -1}
end
local unanswered = level == 0 and not again and not after_ok
-- Field qs: when such a storm began. While no answer came since (this worker's, or any
-- worker's noted by ANSWERED in field fine), its refusals are no server refusing us that a
-- ban may follow: a server closing every connection of its own is failing.
-- Field qsc: its code when the server's own (ARGV[12]), for ANSWERED (an answer during
-- its hold: one burst's answers came back after its refusals).
if unanswered then
  redis.call('HSET', s, 'qs', string.format('%.3f', now), 'qsc', ARGV[12])
end
local qs = tonumber(f['qs'] or '-1')
if unanswered then qs = now end
local quiet = qs >= 0 and not ((age >= 0 and now - age >= qs)
  or tonumber(f['fine'] or '-1e18') >= qs)
-- Whether the IP ever answered us: this worker, or any (fields ok, fine).
local ever = age >= 0 or f['ok'] ~= nil or f['fine'] ~= nil
-- Whether the holds at levels 1 to level add up to ARGV[16] ms: no limit remembers our
-- requests that long, and a neighbour refused alike (ARGV[9] = '7') is the server failing.
local held = 0
for l = 1, level do held = held + math.min(tonumber(ARGV[6]) * 2 ^ (l - 1), tonumber(ARGV[7])) end
local outlasted = held >= tonumber(ARGV[16])
-- Whether the last hold lasted ARGV[18] ms (or the level is back to 0): a firewall dropping
-- or rejecting our connections (ARGV[9] = '8', connections timing out or refused) that
-- each one knocking lengthens forgets us only once we stay away that long.
local outwaited = level == 0
  or math.min(tonumber(ARGV[6]) * 2 ^ (level - 1), tonumber(ARGV[7])) >= tonumber(ARGV[18])
if (level > 0 or again) and now >= hold_end then
  if (ARGV[9] == '4' and not banned) or (ARGV[9] == '2' and not answered)
    or (ARGV[9] == '3' and not answered and not banned) or (ARGV[9] == '6' and not ever)
    or (ARGV[9] == '7' and outlasted) or (ARGV[9] == '8' and not banned
      and (outwaited or (answered and hosts_since < tonumber(ARGV[5])))) then
    -- The server's refusals before the hold were that failure too: no ban follows.
    if tonumber(ARGV[12]) >= 0 then redis.call('HDEL', s, 'srv', 'srvc') end
    return {0, 0, 0, hosts, -1}
  end
  -- The same host again while the IP answers its others: not stepped up; after
  -- ARGV[13] checks a refusal window apart (field a:<host> = 'last:times'), the site's.
  if again then
    local last, times = -1e18, 0
    local seen = f['a:' .. ARGV[1]]
    if seen then
      local sep = string.find(seen, ':', 1, true)
      last = tonumber(string.sub(seen, 1, sep - 1))
      times = tonumber(string.sub(seen, sep + 1))
    end
    local first = tonumber(f['f:' .. ARGV[1]] or (seen and last) or now)
    if now - last >= tonumber(ARGV[3]) then
      last = now
      times = times + 1
    end
    redis.call('HSET', s, 'a:' .. ARGV[1], string.format('%.3f:%d', last, times),
      'f:' .. ARGV[1], string.format('%.3f', first))
    if times >= tonumber(ARGV[13]) and last - first >= tonumber(ARGV[14]) then
      -- Failing from now on: no storm counts it.
      redis.call('HDEL', s, 'r:' .. ARGV[1])
      return {0, 0, 0, hosts, -3}
    end
    return {1, 0, level, hosts, -2}
  end
end
for _, h in ipairs(storm) do
  redis.call('HSET', s, 'c:' .. h, string.format('%.3f', now))
end
if now >= hold_end then
  level = math.min(level + 1, tonumber(ARGV[8]))
  local hold = math.min(tonumber(ARGV[6]) * 2 ^ (level - 1), tonumber(ARGV[7]))
  hold_end = now + hold
  redis.call('HSET', s, 'level', level, 'until', string.format('%.3f', hold_end))
  local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
  if hold_end > tat then
    redis.call('SET', KEYS[1], string.format('%.3f', hold_end), 'PX', math.ceil(hold) + 1000)
  end
end
redis.call('HSET', s, 'last', string.format('%.3f', now))
-- A ban going on is no new refusal: its memory runs from the refusal it follows; nor is
-- a storm before any answer, nor one of its refusals while nothing answered since (qs),
-- which a server failing on every host gives too.
if tonumber(ARGV[12]) >= 0 and not banned and not quiet then
  redis.call('HSET', s, 'srv', string.format('%.3f', now), 'srvc', ARGV[12])
end
local by = -1
if banned then by = tonumber(f['srvc'] or '-1') elseif unanswered then by = -4 end
return {1, math.ceil(hold_end - now), level, hosts, by}
";

/// A host that refused again after holds answered. KEYS: standing. ARGV: host. Its
/// refusals are read afresh: it is no longer known failing nor counted before.
pub(crate) const MENDED: &str = r"
return redis.call('HDEL', KEYS[1], 'a:' .. ARGV[1], 'f:' .. ARGV[1], 'c:' .. ARGV[1])
";

/// Answers came back from a backed-off IP. KEYS: standing. ARGV: decay_ms. One step
/// down when the last refusal (or step) is older than decay_ms. Returns the level.
pub(crate) const DECAY: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local f = redis.call('HMGET', KEYS[1], 'level', 'last')
local level = tonumber(f[1] or '0')
if level == 0 then return 0 end
if now - tonumber(f[2] or '0') < tonumber(ARGV[1]) then return level end
level = level - 1
redis.call('HSET', KEYS[1], 'level', level, 'last', string.format('%.3f', now))
return level
";

/// An answer from the IP, which every worker tells (in the background, `limit::lease`).
/// KEYS: standing. ARGV: ok_window_ms. Notes it in field `fine`, for every worker's
/// `REFUSE`: refusals right after it are a storm of us, and it is an answer since a
/// hold. A standing it makes lasts ok_window_ms (`REFUSE` keeps one an hour). An answer
/// during the hold of a storm before any answer (fields `qs`, `qsc`): one burst's
/// answers came back after its refusals, so that storm is the server's refusal of us a
/// ban may follow (`srv`, `srvc`), as `Standing::fine` reads it.
pub(crate) const ANSWERED: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local f = redis.call('HMGET', KEYS[1], 'qs', 'qsc', 'until', 'fine')
local fresh = redis.call('EXISTS', KEYS[1]) == 0
local qs = tonumber(f[1] or '-1')
if qs >= 0 and tonumber(f[2] or '-1') >= 0 and now < tonumber(f[3] or '0')
  and tonumber(f[4] or '-1e18') < qs then
  redis.call('HSET', KEYS[1], 'srv', f[1], 'srvc', f[2])
end
redis.call('HSET', KEYS[1], 'fine', string.format('%.3f', now))
if fresh then redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1])) end
return 0
";
