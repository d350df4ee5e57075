local raw = redis.call('GET', KEYS[1])
local st = {v = '', s = 0, n = 0, o = 0, os = 0, m = {}}
if raw then st = cjson.decode(raw) end
-- Redis before 5 replicates scripts verbatim and would refuse writes after TIME.
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local job, v, site = ARGV[1], ARGV[2], ARGV[3] == '1'
-- The key's verdict an entry's step left (`Memo::left`); entries written before e[8]
-- existed: their own verdict, or the one they found.
local function left_of(e)
  if e[8] ~= nil then return e[8] end
  if e[2] == 'up' or e[2] == 'degraded' or e[2] == 'down' then return e[2] end
  return e[3]
end
local prev = st.v
local at = nil
for i, e in ipairs(st.m) do
  if e[1] == job then at = i; break end
end
local shared = false
-- This very step run before (a call that timed out and ran late): its answer.
if at and st.m[at][9] == ARGV[12] then
  local e = st.m[at]
  return {e[3], e[4], e[5], now, 0}
end
-- Past its expiry the worker may have given this step up, and told its result without
-- state: taken now, its change would be told by no result.
if now >= tonumber(ARGV[4]) then return {'', 0, 0, now, 0} end
-- Whether this is a recalled redelivery whose first delivery's change may be untold.
local carries = false
if at then
  local e = st.m[at]
  local age = now - e[6]
  if ARGV[9] == '1' and age <= tonumber(ARGV[10]) and (not e[7] or age <= tonumber(ARGV[11])) then
    -- Recalled while the key's verdict is the one that step left.
    if left_of(e) == st.v then
      if e[2] == v then return {e[3], e[4], e[5], now, 0} end
      carries = e[3] ~= '' and e[3] ~= left_of(e)
      -- A move off the verdict that step left is told as one (`super::previous_of`).
      if not site or v == st.v then prev = e[3] end
    end
  else
    shared = true
  end
  if e[7] then shared = true end
  table.remove(st.m, at)
end
-- An observation older than the key's latest moves nothing (`super::stale`).
local age = tonumber(ARGV[15])
local looked = age and now - age
if site and not carries and looked and st.l and st.v ~= '' and looked < st.l then
  return {st.v, st.n, st.s, now, 1}
end
local streak, since
if site then
  if st.v == v then st.n = st.n + 1 else st.n = 1; st.s = now end
  st.v = v; st.o = 0; st.ov = nil
  if looked and (st.l == nil or looked > st.l) then st.l = looked end
  streak, since = st.n, st.s
else
  -- A run per verdict that is none on the site (`Record::other`): 'ov' says whose. A
  -- record written before it had one run for unknown and invalid: taken as this
  -- verdict's, so that a key's long run (an invalid job) keeps its streak on upgrade.
  if st.o == 0 or (st.ov ~= nil and st.ov ~= v) then st.o = 0; st.os = now end
  st.o = st.o + 1; st.ov = v
  streak, since = st.o, st.os
end
table.insert(st.m, 1, {job, v, prev, streak, since, now, shared, st.v, ARGV[12]})
-- The latest ARGV[8] entries and the latest ARGV[13] changes (`super::prune`).
local kept, changes = {}, 0
for i, e in ipairs(st.m) do
  local change = e[3] ~= '' and e[3] ~= left_of(e)
  if change then changes = changes + 1 end
  if i <= tonumber(ARGV[8]) or (change and changes <= tonumber(ARGV[13])) then
    kept[#kept + 1] = e
  end
end
st.m = kept
redis.call('SET', KEYS[1], cjson.encode(st), 'EX', ARGV[5])
redis.call('SET', KEYS[2], '{"at":' .. string.format('%d', now) .. ',"delivery":' .. cjson.encode(job)
  .. ',"prev":' .. cjson.encode(prev)
  .. ',"streak":' .. string.format('%d', streak) .. ',"since":' .. string.format('%d', since)
  .. ',"shared":' .. tostring(shared)
  .. ',"fingerprint":' .. (ARGV[14] == '' and 'null' or cjson.encode(ARGV[14]))
  .. ',"report":' .. ARGV[7] .. '}', 'EX', ARGV[6])
return {prev, streak, since, now, 0}
