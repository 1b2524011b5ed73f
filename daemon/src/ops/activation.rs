//! systemd socket activation: the TCP listener passed in as LISTEN_FDS, if any.

use std::os::fd::FromRawFd;

/// The first socket systemd passed (confidantd.socket), made non-blocking for tokio.
pub fn inherited_tcp_listener() -> std::io::Result<Option<std::net::TcpListener>> {
    if std::env::var_os("LISTEN_FDS").is_none() {
        return Ok(None);
    }
    let Some(fd) = sd_notify::listen_fds()?.next() else {
        return Ok(None);
    };
    // SAFETY: under the LISTEN_FDS protocol systemd hands this process ownership of the
    // descriptor (listen_fds checked LISTEN_PID is ours), and nothing else wraps it.
    #[allow(unsafe_code)]
    let listener = unsafe { std::net::TcpListener::from_raw_fd(fd) };
    listener.set_nonblocking(true)?;
    Ok(Some(listener))
}
