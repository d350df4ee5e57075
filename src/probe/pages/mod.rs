//! Reading a page for what a person would see at once: a block page, a parked domain, a
//! suspended account, a default server page, or a bot challenge. Plain text in, a
//! description out; the built-in patterns are compiled once and searched in one pass.

//!
//! A file per role: [`patterns`] holds the built-in tables (data, no logic), [`visible`]
//! reads where on a page a person reads nothing and what they do read, [`soft`] finds a
//! stand-in page (block, parked, suspended, maintenance, default, error) in what a person
//! reads, and [`walls`] finds bot challenges, cookie walls and firewalls' block pages.

mod patterns;
mod soft;
mod visible;
mod walls;

pub(crate) use soft::soft_failure;
pub(crate) use visible::visible_text;
pub(crate) use walls::{
    challenge, cookie_wall, firewall_block, limit_page, wall_on_success, COOKIE_WALL,
};

/// Pages up to this size are read as text and checked for soft failures; block, parked
/// and default pages are small, real pages that mention "access denied" are not.
pub(crate) const SNIFF_BYTES: usize = 64 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    /// Every reader of a page's text, over every cut of pages in several scripts with
    /// every construct they look for: none may panic (a panic is a job with no result;
    /// hunt G found one in the reading of refreshes).
    #[test]
    fn no_reader_of_a_page_panics_on_any_cut_of_any_script() {
        let pages = [
            "<!doctype html><html><head><meta charset=utf-8><title>欢迎访问 — Café</title><!-- 注释 --><meta http-equiv=refresh content='0; url=/入口'><style>p{}</style></head><body><noscript>请启用</noscript><template>é</template><script>location.href='/登录'</script><iframe src='/框架'></iframe><p>本站正常运行 Smith &amp; Sons &#27426;</p><h1>Access denied ログイン</h1></body></html>",
            "<html><head><title>Доступ запрещён</title></head><body><p>Сайт временно недоступен</p><!--x--><s<sc<scr<scri<scrip<script>ë</scr</script></body>",
            "<<<!--<!-<noscript<template>ü<tem<nos<sty<style",
        ];
        for page in pages {
            for (at, _) in page.char_indices() {
                for text in [&page[..at], &page[at..]] {
                    let _ = soft_failure(text);
                    let _ = challenge(text);
                    let _ = wall_on_success(text);
                    let _ = cookie_wall(text);
                    let _ = firewall_block(text);
                    let _ = crate::probe::refresh::target(None, text);
                    let _ = crate::probe::refresh::target(Some(text), text);
                    let _ = crate::probe::refresh::frame(text);
                    let _ = crate::probe::shown::shows_nothing(text);
                    let _ = crate::probe::shown::text_longer_than(text, 20);
                }
            }
        }
    }
}
