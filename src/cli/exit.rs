//! How a command ends, as the shell sees it. Every command returns an [`Exit`], and an
//! error that ends one is given its exit by its type ([`Exit::of`]), never by its
//! words, so a reworded message cannot change an exit code. The codes are part of the
//! public contract: 0 success, 1 failure at run time, 2 usage, configuration or input.

use std::process::ExitCode;

use crate::config::ConfigError;

/// An error that is the user's to fix (usage, configuration, input): exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct UsageError(pub String);

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exit {
    /// 0: done; for `check`, every site was up.
    Success,
    /// 1: failed at run time (the broker, the output, the runtime); for `check`, some
    /// site was not up.
    Failure,
    /// 2: usage, configuration or input error: the user's to fix, and running again
    /// unchanged will fail the same way.
    Usage,
}

impl Exit {
    /// The process exit code.
    pub(crate) const fn code(self) -> u8 {
        match self {
            Exit::Success => 0,
            Exit::Failure => 1,
            Exit::Usage => 2,
        }
    }

    /// The exit for an error that ended a command: [`Exit::Usage`] when a
    /// [`UsageError`] or a [`ConfigError`] is anywhere in its chain (context added on
    /// the way up does not hide it), [`Exit::Failure`] otherwise.
    pub(crate) fn of(e: &anyhow::Error) -> Exit {
        let the_users = e
            .chain()
            .any(|c| c.is::<UsageError>() || c.is::<ConfigError>());
        if the_users {
            Exit::Usage
        } else {
            Exit::Failure
        }
    }

    /// The exit for a command line clap could not parse, or for `--help` and
    /// `--version`, which clap also hands back as an error (printed to stdout).
    pub(crate) fn of_clap(e: &clap::Error) -> Exit {
        if e.use_stderr() {
            Exit::Usage
        } else {
            Exit::Success
        }
    }
}

/// Whether `e` is the reader of our standard output going away (`picket check | head`):
/// how a pipe ends, so the command stops without a message. Its exit stays 1 (the
/// output could not all be written): 0 would tell a script that `check` found every
/// site up, sites it never probed included (CONTRACT.md). Anything not yet written was
/// not handed over (`results --drain` acks only what it wrote).
pub(crate) fn reader_left(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

impl From<&ConfigError> for Exit {
    /// A configuration that cannot be loaded or is not valid is the user's to fix.
    fn from(_: &ConfigError) -> Exit {
        Exit::Usage
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> ExitCode {
        ExitCode::from(exit.code())
    }
}

#[cfg(test)]
mod tests {
    use anyhow::Context;
    use clap::Parser;

    use super::*;

    #[test]
    fn a_broken_pipe_anywhere_in_the_chain_is_the_reader_leaving() {
        let pipe = std::io::Error::from(std::io::ErrorKind::BrokenPipe);
        let wrapped = Err::<(), _>(pipe).context("writing to stdout").unwrap_err();
        assert!(reader_left(&wrapped));
        let full = std::io::Error::other("No space left on device");
        assert!(!reader_left(&anyhow::Error::from(full)));
    }

    #[test]
    fn the_codes_are_the_contracts() {
        assert_eq!(Exit::Success.code(), 0);
        assert_eq!(Exit::Failure.code(), 1);
        assert_eq!(Exit::Usage.code(), 2);
        assert_eq!(ExitCode::from(Exit::Success), ExitCode::SUCCESS);
        assert_eq!(ExitCode::from(Exit::Usage), ExitCode::from(2));
    }

    #[test]
    fn the_users_errors_exit_2_even_under_context() {
        let usage = anyhow::Error::from(UsageError("nothing to check".into()));
        assert_eq!(Exit::of(&usage), Exit::Usage);
        let wrapped = Err::<(), _>(UsageError("line 3: not a URL".into()))
            .context("enqueue")
            .expect_err("an error");
        assert_eq!(Exit::of(&wrapped), Exit::Usage);
        let config =
            crate::config::Settings::from_toml("[probe]\nattempts = 0\n").expect_err("refused");
        assert_eq!(Exit::from(&config), Exit::Usage);
        assert_eq!(Exit::of(&anyhow::Error::from(config)), Exit::Usage);
    }

    #[test]
    fn other_errors_exit_1_whatever_they_say() {
        let io = std::io::Error::new(std::io::ErrorKind::BrokenPipe, "usage error: config");
        assert_eq!(Exit::of(&anyhow::Error::from(io)), Exit::Failure);
        assert_eq!(
            Exit::of(&anyhow::anyhow!("config: probe.timeout: usage")),
            Exit::Failure
        );
    }

    #[test]
    fn a_bad_command_line_exits_2_and_help_exits_0() {
        let bad = super::super::Cli::try_parse_from(["picket", "no-such-command"])
            .expect_err("unknown command");
        assert_eq!(Exit::of_clap(&bad), Exit::Usage);
        let help =
            super::super::Cli::try_parse_from(["picket", "--help"]).expect_err("help is an error");
        assert_eq!(Exit::of_clap(&help), Exit::Success);
        let version = super::super::Cli::try_parse_from(["picket", "--version"])
            .expect_err("version is an error");
        assert_eq!(Exit::of_clap(&version), Exit::Success);
    }
}
