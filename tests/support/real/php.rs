//! PHP-FPM behind nginx, as a small host runs PHP sites: one pool on a unix socket,
//! nginx passing `*.php` to it over FastCGI, and Debian's production `php.ini` (errors
//! logged, not shown). What a visitor sees of a broken PHP site is what PHP itself
//! writes: the driver's error where the page should be, an empty 500, nginx's 502 once
//! the pool is gone.

use super::nginx::Nginx;
use super::{scratch, write, Daemon};
use crate::support::free_port;

/// The pool's executable: Debian names it by PHP's version (`php-fpm8.2`).
fn php_fpm() -> String {
    let found = std::fs::read_dir("/usr/sbin").ok().and_then(|dir| {
        dir.filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with("php-fpm"))
            .max()
    });
    found.unwrap_or_else(|| panic!("php-fpm not found: {}", super::REAL_INSTALL_HINT))
}

/// A PHP site on `host`: its pool (`None` once [`stop_pool`](Self::stop_pool)ped) and
/// its nginx.
pub struct Php {
    pub pool: Option<Daemon>,
    pub nginx: Nginx,
}

impl Php {
    /// nginx on `ip` serving `host` from `scripts` (file name, PHP source), `*.php`
    /// through a PHP-FPM pool of two workers running as www-data.
    pub fn start(ip: &str, host: &str, scripts: &[(&str, &str)]) -> Php {
        let dir = scratch("php-fpm");
        let d = dir.display().to_string();
        for (name, source) in scripts {
            write(&dir, &format!("www/{name}"), source);
        }
        let conf = format!(
            "[global]\npid = {d}/fpm.pid\nerror_log = {d}/fpm.log\ndaemonize = no\n\
             [www]\nlisten = {d}/fpm.sock\nlisten.mode = 0666\nuser = www-data\n\
             group = www-data\npm = static\npm.max_children = 2\n"
        );
        let path = write(&dir, "fpm.conf", &conf);
        let socket = dir.join("fpm.sock");
        let pool = Daemon::start_until(
            "php-fpm",
            &php_fpm(),
            &["-F".into(), "-y".into(), path.display().to_string()],
            &dir,
            || socket.exists(),
        );
        let web = scratch("nginx-php");
        let port = free_port();
        let server = format!(
            "  server {{ listen {ip}:{port}; server_name {host}; root {d}/www; \
             index index.php; location ~ \\.php$ {{ include /etc/nginx/fastcgi_params; \
             fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name; \
             fastcgi_pass unix:{d}/fpm.sock; }} }}\n"
        );
        let nginx = Nginx::run("nginx-php", &web, ip, port, &server);
        Php {
            pool: Some(pool),
            nginx,
        }
    }

    /// Stops the pool, as a crashed or stopped PHP-FPM: nginx still answers.
    pub fn stop_pool(&mut self) {
        self.pool = None;
    }
}
