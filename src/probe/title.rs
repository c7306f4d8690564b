//! Pure classification of process titles (no I/O).
//!
//! sshd rewrites its `argv` into a single title string (FACTS.md §1). The rule we count by:
//! exactly one process per *authenticated* connection carries a title `PREFIX: USER@TTYS` or
//! `PREFIX: USER` (no bracketed tag). Everything with a bracketed tag (`[priv]`, `[net]`,
//! `[accepted]`, `[listener]`, `[session-auth ...]`, `[rexeced]`) is either the listener or a
//! connection that has not (yet) authenticated. Counting `[priv]`, as the classic cron recipe does,
//! counts password-guessing bots (a user name is enough to get a `[priv]` monitor) and misses root
//! logins on OpenSSH <= 9.7, which have no monitor.

/// The process names (`/proc/PID/comm`) that belong to OpenSSH's server.
/// `sshd-session` exists from OpenSSH 9.8, `sshd-auth` from 10.0.
pub const SSHD_COMMS: [&str; 3] = ["sshd", "sshd-session", "sshd-auth"];

/// `comm` of mosh's server (one process per mosh session, running as the user).
pub const MOSH_COMM: &str = "mosh-server";

/// `comm` is truncated by the kernel to 15 bytes: `ssm-session-worker` shows as this.
pub const SSM_WORKER_COMM: &str = "ssm-session-wor";
/// The full program name, checked against `argv[0]` because `comm` is truncated.
pub const SSM_WORKER_NAME: &str = "ssm-session-worker";
/// Parents of `ssm-session-worker` (`amazon-ssm-agent` -> `ssm-agent-worker`), truncated likewise.
pub const SSM_AGENT_COMMS: [&str; 2] = ["amazon-ssm-agen", "ssm-agent-worke"];

/// What an sshd-family title says about its process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SshdTitle {
    /// An authenticated connection: the one process we count.
    Session {
        user: String,
        /// `pts/0`, `pts/0,pts/1` (several channels on one connection), `notty`, or `None` for
        /// a connection without any session channel (`ssh -N`, port forwarding only).
        ttys: Option<String>,
    },
    /// The daemon accepting connections (`[listener]`, or plain `/usr/sbin/sshd -D` before 8.x).
    Listener,
    /// `USER [priv]`: the privileged monitor. Exists before authentication, so never counted;
    /// its child tells whether the user got in.
    Monitor { user: String },
    /// Any other bracketed state: not authenticated (yet).
    PreAuth,
    /// Not a title we understand (truncated, empty, foreign). Never counted.
    Unknown,
}

impl SshdTitle {
    /// Whether the walker should look at this process's children: sessions hang below listeners
    /// and monitors; a session's own children are the user's shell and never interesting.
    pub fn may_have_sessions_below(&self) -> bool {
        matches!(
            self,
            SshdTitle::Listener | SshdTitle::Monitor { .. } | SshdTitle::PreAuth
        )
    }
}

/// The title is everything up to the first NUL: sshd pads its rewritten title with NULs, while an
/// untouched argv (old listeners) separates arguments with NULs.
pub fn title_of(cmdline: &[u8]) -> String {
    let first = cmdline.split(|b| *b == 0).next().unwrap_or_default();
    String::from_utf8_lossy(first).into_owned()
}

/// The whole argv, arguments joined by spaces (for display and old-style listener detection).
pub fn argv_of(cmdline: &[u8]) -> Vec<String> {
    cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// Classifies the raw `/proc/PID/cmdline` of a process whose `comm` is one of [`SSHD_COMMS`].
pub fn classify_sshd(cmdline: &[u8]) -> SshdTitle {
    let title = title_of(cmdline);
    let title = title.trim_end();
    let Some(rest) = ["sshd: ", "sshd-session: ", "sshd-auth: "]
        .iter()
        .find_map(|p| title.strip_prefix(p))
    else {
        // Untouched argv: the listener of OpenSSH 7.x/8.x is `/usr/sbin/sshd -D`.
        return if title.starts_with('/') && title.rsplit('/').next() == Some("sshd") {
            SshdTitle::Listener
        } else {
            SshdTitle::Unknown
        };
    };
    let rest = rest.trim();
    if rest.is_empty() {
        return SshdTitle::Unknown;
    }
    if rest.starts_with('/') || rest.contains("[listener]") {
        return SshdTitle::Listener;
    }
    if let Some(user) = rest.strip_suffix(" [priv]") {
        return if is_user_name(user) {
            SshdTitle::Monitor {
                user: user.to_owned(),
            }
        } else {
            SshdTitle::PreAuth
        };
    }
    if rest.contains('[') {
        return SshdTitle::PreAuth;
    }
    match rest.split_once('@') {
        Some((user, ttys)) if is_user_name(user) && is_tty_list(ttys) => SshdTitle::Session {
            user: user.to_owned(),
            ttys: Some(ttys.to_owned()),
        },
        Some(_) => SshdTitle::Unknown,
        None if is_user_name(rest) => SshdTitle::Session {
            user: rest.to_owned(),
            ttys: None,
        },
        None => SshdTitle::Unknown,
    }
}

fn is_user_name(s: &str) -> bool {
    !s.is_empty()
        && !s
            .chars()
            .any(|c| c.is_whitespace() || c == '[' || c == ']' || c == '@')
}

/// `notty`, `pts/3`, `pts/0,pts/1`, `tty1`.
fn is_tty_list(s: &str) -> bool {
    !s.is_empty()
        && s.split(',').all(|t| {
            !t.is_empty()
                && t.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '/' || c == '-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(title: &str) -> SshdTitle {
        // sshd pads the rewritten title with NULs; include some to exercise the trimming.
        let mut bytes = title.as_bytes().to_vec();
        bytes.extend_from_slice(&[0, 0, 0]);
        classify_sshd(&bytes)
    }

    fn session(user: &str, ttys: Option<&str>) -> SshdTitle {
        SshdTitle::Session {
            user: user.into(),
            ttys: ttys.map(Into::into),
        }
    }

    #[test]
    fn every_row_of_the_openssh_table_for_both_prefixes() {
        for p in ["sshd", "sshd-session"] {
            assert_eq!(c(&format!("{p}: [accepted]")), SshdTitle::PreAuth);
            assert_eq!(c(&format!("{p}: [net]")), SshdTitle::PreAuth);
            assert_eq!(c(&format!("{p}: [rexeced]")), SshdTitle::PreAuth);
            assert_eq!(c(&format!("{p}: [session-auth early]")), SshdTitle::PreAuth);
            assert_eq!(c(&format!("{p}: [session-auth]")), SshdTitle::PreAuth);
            assert_eq!(c(&format!("{p}: alice [net]")), SshdTitle::PreAuth);
            assert_eq!(
                c(&format!("{p}: alice [priv]")),
                SshdTitle::Monitor {
                    user: "alice".into()
                }
            );
            assert_eq!(
                c(&format!("{p}: alice@pts/0")),
                session("alice", Some("pts/0"))
            );
            assert_eq!(
                c(&format!("{p}: alice@notty")),
                session("alice", Some("notty"))
            );
            assert_eq!(c(&format!("{p}: alice")), session("alice", None));
            assert_eq!(
                c(&format!("{p}: root@pts/0")),
                session("root", Some("pts/0"))
            );
            assert_eq!(
                c(&format!("{p}: alice@pts/0,pts/1")),
                session("alice", Some("pts/0,pts/1"))
            );
        }
        assert_eq!(
            c("sshd: /usr/sbin/sshd -D [listener] 0 of 10-100 startups"),
            SshdTitle::Listener
        );
        assert_eq!(
            c("sshd: /usr/sbin/sshd -D -f /tmp/x [listener] 2 of 10-100 startups"),
            SshdTitle::Listener
        );
        assert_eq!(c("sshd-auth: alice [net]"), SshdTitle::PreAuth);
    }

    #[test]
    fn old_listener_is_an_untouched_argv() {
        assert_eq!(classify_sshd(b"/usr/sbin/sshd\0-D\0"), SshdTitle::Listener);
        assert_eq!(classify_sshd(b"/usr/sbin/sshd\0"), SshdTitle::Listener);
        assert_eq!(
            classify_sshd(b"/usr/bin/not-sshd\0-D\0"),
            SshdTitle::Unknown
        );
    }

    #[test]
    fn bad_data_is_unknown_never_a_session() {
        assert_eq!(classify_sshd(b""), SshdTitle::Unknown);
        assert_eq!(classify_sshd(b"\0\0\0"), SshdTitle::Unknown);
        assert_eq!(classify_sshd(b"sshd: "), SshdTitle::Unknown);
        assert_eq!(classify_sshd(b"sshd"), SshdTitle::Unknown);
        // Truncated in the middle of a tag: still not a session.
        assert_eq!(classify_sshd(b"sshd: alice [pri"), SshdTitle::PreAuth);
        assert_eq!(classify_sshd(b"sshd: alice@"), SshdTitle::Unknown);
        assert_eq!(classify_sshd(b"sshd: @pts/0"), SshdTitle::Unknown);
        assert_eq!(classify_sshd(b"sshd: two words"), SshdTitle::Unknown);
    }

    #[test]
    fn non_utf8_user_names_survive_lossily() {
        let t = classify_sshd(b"sshd: \xffbob@pts/1\0\0");
        assert_eq!(t, session("\u{fffd}bob", Some("pts/1")));
    }

    #[test]
    fn walker_descends_only_where_sessions_can_hang() {
        assert!(SshdTitle::Listener.may_have_sessions_below());
        assert!(SshdTitle::Monitor { user: "a".into() }.may_have_sessions_below());
        assert!(SshdTitle::PreAuth.may_have_sessions_below());
        assert!(!session("a", None).may_have_sessions_below());
        assert!(!SshdTitle::Unknown.may_have_sessions_below());
    }
}
