//! Who a caller is: user name and membership of the approvers group, from
//! the system's user and group databases (NSS), by uid.

use std::ffi::{CStr, CString};

/// Retries a `*_r` lookup with a growing buffer.
fn with_buffer<T>(mut f: impl FnMut(&mut [u8]) -> Result<Option<T>, i32>) -> Option<T> {
    let mut buf = vec![0u8; 4096];
    loop {
        match f(&mut buf) {
            Err(libc::ERANGE) if buf.len() < 1 << 20 => buf.resize(buf.len() * 4, 0),
            Err(_) => return None,
            Ok(v) => return v,
        }
    }
}

/// The name of `uid` from the system's user database.
pub fn user_name(uid: u32) -> Option<String> {
    passwd(uid).map(|(name, _)| name)
}

/// Name and primary group of `uid`.
pub fn passwd(uid: u32) -> Option<(String, u32)> {
    with_buffer(|buf| {
        // SAFETY: zeroed passwd is a valid out-parameter.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: valid pointers and buffer length; the strings `pwd`
        // points to live in `buf`.
        let rc = unsafe {
            libc::getpwuid_r(
                uid,
                &mut pwd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut result,
            )
        };
        if rc != 0 {
            return Err(rc);
        }
        if result.is_null() || pwd.pw_name.is_null() {
            return Ok(None);
        }
        // SAFETY: getpwuid_r succeeded: pw_name is a NUL-terminated string.
        let name = unsafe { CStr::from_ptr(pwd.pw_name) };
        Ok(Some((name.to_string_lossy().into_owned(), pwd.pw_gid)))
    })
}

/// The gid of group `name`.
pub fn group_gid(name: &str) -> Option<u32> {
    let cname = CString::new(name).ok()?;
    with_buffer(|buf| {
        // SAFETY: zeroed group is a valid out-parameter.
        let mut grp: libc::group = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::group = std::ptr::null_mut();
        // SAFETY: valid pointers and buffer length.
        let rc = unsafe {
            libc::getgrnam_r(
                cname.as_ptr(),
                &mut grp,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut result,
            )
        };
        if rc != 0 {
            return Err(rc);
        }
        Ok((!result.is_null()).then_some(grp.gr_gid))
    })
}

/// Every group of user `name` whose primary group is `gid` (supplementary
/// groups included).
pub fn groups_of(name: &str, gid: u32) -> Vec<u32> {
    let Ok(cname) = CString::new(name) else {
        return Vec::new();
    };
    let mut n: libc::c_int = 64;
    loop {
        let mut groups = vec![0 as libc::gid_t; n as usize];
        let mut count = n;
        // SAFETY: `groups` has room for `count` entries.
        let rc =
            unsafe { libc::getgrouplist(cname.as_ptr(), gid, groups.as_mut_ptr(), &mut count) };
        if rc >= 0 {
            groups.truncate(count.max(0) as usize);
            return groups;
        }
        if count <= n || n >= 65_536 {
            return Vec::new();
        }
        n = count;
    }
}

/// Whether `uid` belongs to group `group` (as its primary or a
/// supplementary group).
pub fn is_member(uid: u32, group: &str) -> bool {
    let Some(gid) = group_gid(group) else {
        return false;
    };
    let Some((name, primary)) = passwd(uid) else {
        return false;
    };
    primary == gid || groups_of(&name, primary).contains(&gid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_known_and_in_its_own_group() {
        let (name, gid) = passwd(0).unwrap();
        assert_eq!(name, "root");
        assert_eq!(group_gid("root"), Some(gid));
        assert!(is_member(0, "root"));
        assert!(!is_member(0, "no-such-group-geowall"));
    }
}
