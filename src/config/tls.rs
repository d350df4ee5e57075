//! `[tls]`: the extra CA file trusted besides the bundled and system roots, and what a
//! certificate problem or a certificate near its expiry makes of a site.

use std::path::PathBuf;

use serde::Deserialize;

use super::{invalid, ConfigError};

/// `[tls]` exactly as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    extra_ca_file: String,
    on_error: String,
    #[serde(deserialize_with = "super::parse::whole")]
    expiry_warn_days: i64,
    expiry_by_lifetime: bool,
}

/// What a certificate problem makes of a site.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsOnError {
    /// Reachable, but not right.
    Degraded,
    /// Not available.
    Down,
}

/// `[tls]`
#[derive(Debug, Clone)]
pub struct TlsSettings {
    /// PEM file trusted in addition to the bundled and system roots (read again when it
    /// changes: `http::tls::Trust`).
    pub extra_ca_file: Option<PathBuf>,
    /// Verdict for a certificate problem.
    pub on_error: TlsOnError,
    /// A certificate expiring sooner than this many days makes the site `degraded`.
    pub expiry_warn_days: i64,
    /// A certificate issued for fewer than three times `expiry_warn_days` makes the
    /// site `degraded` only once less than a third of its life is left.
    pub expiry_by_lifetime: bool,
}

impl TryFrom<RawTls> for TlsSettings {
    type Error = ConfigError;

    fn try_from(t: RawTls) -> Result<Self, ConfigError> {
        let on_error = match t.on_error.as_str() {
            "degraded" => TlsOnError::Degraded,
            "down" => TlsOnError::Down,
            other => {
                return Err(invalid(
                    "tls.on_error",
                    format!("{other:?} is not \"degraded\" or \"down\""),
                ))
            }
        };
        let extra_ca_file = if t.extra_ca_file.trim().is_empty() {
            None
        } else {
            // Checked here, so that a typo stops the start, not every HTTPS probe.
            let path = super::parse::existing_file("tls.extra_ca_file", &t.extra_ca_file)?;
            super::parse::pem_certificates("tls.extra_ca_file", &path)?;
            Some(path)
        };
        if t.expiry_warn_days < 0 {
            return Err(invalid("tls.expiry_warn_days", "must not be negative"));
        }
        Ok(TlsSettings {
            extra_ca_file,
            on_error,
            expiry_warn_days: t.expiry_warn_days,
            expiry_by_lifetime: t.expiry_by_lifetime,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::{err, Settings};
    use super::*;

    #[test]
    fn each_tls_key_is_checked_and_named() {
        let s = Settings::from_toml("[tls]\non_error = \"down\"\n").expect("down");
        assert_eq!(s.tls.on_error, TlsOnError::Down);
        assert!(s.tls.extra_ca_file.is_none());
        assert!(err("[tls]\non_error = \"up\"\n").contains("tls.on_error"));
        let e = err("[tls]\nextra_ca_file = \"/nonexistent/ca.pem\"\n");
        assert!(
            e.contains("tls.extra_ca_file") && e.contains("no such file"),
            "{e}"
        );
        assert!(err("[tls]\nexpiry_warn_days = -1\n").contains("tls.expiry_warn_days"));
    }

    /// A CA file that is no PEM passed `config check`, and then failed every start of
    /// `picket check` with exit 1 instead of 2; a directory was called "no such file".
    #[test]
    fn a_ca_file_must_hold_pem_certificates() {
        let dir = tempfile::tempdir().expect("temp dir");
        let junk = dir.path().join("ca.pem");
        std::fs::write(&junk, "not a certificate\n").expect("write");
        let hello = dir.path().join("hello.pem");
        std::fs::write(
            &hello,
            "-----BEGIN CERTIFICATE-----\naGVsbG8=\n-----END CERTIFICATE-----\n",
        )
        .expect("write");
        let e = err(&format!("[tls]\nextra_ca_file = \"{}\"\n", hello.display()));
        assert!(
            e.contains("tls.extra_ca_file") && e.contains("certificate"),
            "{e}"
        );
        let broken = dir.path().join("broken.pem");
        std::fs::write(
            &broken,
            "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
        )
        .expect("write");
        for (path, says) in [
            (&junk, "PEM"),
            (&broken, "PEM"),
            (&dir.path().to_path_buf(), "directory"),
        ] {
            let e = err(&format!("[tls]\nextra_ca_file = \"{}\"\n", path.display()));
            assert!(e.contains("tls.extra_ca_file") && e.contains(says), "{e}");
        }
    }
}
