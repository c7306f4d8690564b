//! The one integration-test binary (each extra binary is another slow link).
//! Peers (sshd, LocalStack, statsd) are real; `scripts/test` installs them and sets
//! `EMF_SSH_REAL_PEERS=1`, which turns a missing peer from a skip into a failure.

mod alarm;
mod daemon;
mod harness;
mod holds;
mod probe_hidepid;
mod probe_real_sshd;
mod publish;
