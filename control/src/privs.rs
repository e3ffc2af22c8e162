//! Least privilege: once its ports are open, vswitchd can run as an
//! unprivileged user with only the capabilities it still uses.
//!
//! Kept: CAP_NET_ADMIN (TAP/TUN devices, interface flags and MTU, moving and
//! deleting interfaces over netlink, socket buffers beyond the limits) and
//! CAP_NET_RAW (AF_PACKET sockets for new afpacket ports). Dropped, among
//! others: CAP_SYS_ADMIN, which entering another network namespace
//! (setns(2)) needs: after the drop, ports in other namespaces can only come
//! from the `--config` file (opened before it). See capabilities(7) for the
//! order: the bounding set is cut while still root, PR_SET_KEEPCAPS keeps
//! the permitted set across setuid(2), then the effective set is raised from
//! it, and no_new_privs forbids regaining anything by execve(2).

use caps::{CapSet, Capability, CapsHashSet};
use std::ffi::{CStr, CString};

/// The capabilities kept.
pub const KEPT: [Capability; 2] = [Capability::CAP_NET_ADMIN, Capability::CAP_NET_RAW];

/// A user to run as.
#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    pub uid: libc::uid_t,
    pub gid: libc::gid_t,
}

/// Looks `name` up in the user database (a name, or a numeric uid).
pub fn lookup(name: &str) -> Result<User, String> {
    let c = CString::new(name).map_err(|_| format!("invalid user name '{name}'"))?;
    // SAFETY: passwd is plain old data; all-zero is a valid value for the
    // out-parameter, which getpwnam_r fills with pointers into `buf`.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut res: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: all pointers are valid for the call: the name is a NUL-ended
    // string, `pw` and `res` are writable, `buf` has the length given.
    let rc =
        unsafe { libc::getpwnam_r(c.as_ptr(), &mut pw, buf.as_mut_ptr(), buf.len(), &mut res) };
    if rc == 0 && !res.is_null() {
        // SAFETY: on success pw_name points at a NUL-ended string in `buf`,
        // which is still alive.
        let n = unsafe { CStr::from_ptr(pw.pw_name) }
            .to_string_lossy()
            .into_owned();
        return Ok(User {
            name: n,
            uid: pw.pw_uid,
            gid: pw.pw_gid,
        });
    }
    if let Ok(uid) = name.parse::<libc::uid_t>() {
        return Ok(User {
            name: name.to_string(),
            uid,
            gid: uid,
        });
    }
    Err(format!("no such user '{name}'"))
}

fn err(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

/// Becomes `user` with only [`KEPT`] capabilities. Call it from the main
/// thread before starting threads that should run unprivileged: setuid(2)
/// through glibc changes every thread's ids (threads started earlier lose
/// all capabilities), the capability sets are the calling thread's and are
/// inherited by threads it starts afterwards.
pub fn drop_to(user: &User) -> Result<(), String> {
    let keep: CapsHashSet = KEPT.into_iter().collect();
    // While still root: nothing outside KEPT can ever come back.
    for c in caps::all() {
        if !keep.contains(&c) {
            caps::drop(None, CapSet::Bounding, c)
                .map_err(|e| format!("dropping {c} from the bounding set: {e}"))?;
        }
    }
    // SAFETY: prctl with PR_SET_KEEPCAPS takes a plain integer argument.
    if unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) } != 0 {
        return Err(err("PR_SET_KEEPCAPS"));
    }
    let groups = [user.gid];
    // SAFETY: `groups` is a valid array of the length given.
    if unsafe { libc::setgroups(groups.len(), groups.as_ptr()) } != 0 {
        return Err(err("setgroups"));
    }
    // SAFETY: plain integer arguments.
    if unsafe { libc::setgid(user.gid) } != 0 {
        return Err(err("setgid"));
    }
    // SAFETY: plain integer argument.
    if unsafe { libc::setuid(user.uid) } != 0 {
        return Err(err("setuid"));
    }
    caps::set(None, CapSet::Permitted, &keep).map_err(|e| format!("permitted set: {e}"))?;
    caps::set(None, CapSet::Effective, &keep).map_err(|e| format!("effective set: {e}"))?;
    caps::clear(None, CapSet::Inheritable).map_err(|e| format!("inheritable set: {e}"))?;
    // SAFETY: prctl with integer arguments only.
    unsafe {
        if libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0) != 0 {
            return Err(err("PR_SET_KEEPCAPS"));
        }
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return Err(err("PR_SET_NO_NEW_PRIVS"));
        }
    }
    // Root again must be impossible.
    // SAFETY: plain integer argument.
    if unsafe { libc::setuid(0) } == 0 && user.uid != 0 {
        return Err("could set the user id back to root after dropping privileges".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_names_and_numbers() {
        let root = lookup("root").unwrap();
        assert_eq!((root.uid, root.gid), (0, 0));
        let n = lookup("65534").unwrap();
        assert_eq!(n.uid, 65534);
        assert!(lookup("no-such-user-here")
            .unwrap_err()
            .contains("no such user"));
        assert!(lookup("a\0b").is_err());
    }
}
