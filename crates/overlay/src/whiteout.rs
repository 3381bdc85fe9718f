//! Whiteouts and opaque directories in the kernel's overlayfs format.
//!
//! A *whiteout* is a character device with device number 0/0: in an upper (or higher
//! lower) layer it hides the entry of the same name in the layers below. An *opaque*
//! directory carries the xattr `trusted.overlay.opaque=y`: it hides every entry of the
//! directory of the same path in the layers below. OCI/Docker tar layers encode these as
//! `.wh.<name>` files and `.wh..wh..opq` markers ([`WHITEOUT_PREFIX`], [`OPAQUE_WHITEOUT`]);
//! an unpacker turns them into the kernel format with these helpers.
//!
//! The `trusted.*` xattr namespace needs `CAP_SYS_ADMIN`.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Mode, StatxFlags, XattrFlags};

/// Prefix of a whiteout entry in an OCI / Docker layer tar: `.wh.<name>` deletes `<name>`.
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// Name of the marker entry that makes its directory opaque in an OCI / Docker layer tar.
pub const OPAQUE_WHITEOUT: &str = ".wh..wh..opq";
/// The xattr that marks an overlayfs directory opaque.
pub const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

fn check_name(name: &OsStr) -> io::Result<()> {
    let b = name.as_bytes();
    if b.is_empty() || b == b"." || b == b".." || b.contains(&b'/') || b.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not a single path component"),
        ));
    }
    Ok(())
}

/// Creates a whiteout (a 0/0 character device) named `name` in the directory `dir`.
///
/// `name` must be one path component. Fails with `AlreadyExists` if the name is taken.
pub fn whiteout_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    check_name(name)?;
    rustix::fs::mknodat(
        dir,
        name,
        FileType::CharacterDevice,
        Mode::empty(),
        rustix::fs::makedev(0, 0),
    )?;
    Ok(())
}

/// Creates a whiteout at `path` (path-based form of [`whiteout_at`]).
pub fn whiteout(path: &Path) -> io::Result<()> {
    let (dir, name) = split(path)?;
    whiteout_at(dir.as_fd(), name)
}

/// Reports whether `name` in `dir` is a whiteout. A missing entry is not a whiteout.
pub fn is_whiteout_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<bool> {
    check_name(name)?;
    match rustix::fs::statx(dir, name, AtFlags::SYMLINK_NOFOLLOW, StatxFlags::TYPE) {
        Ok(st) => Ok(
            FileType::from_raw_mode(st.stx_mode.into()) == FileType::CharacterDevice
                && st.stx_rdev_major == 0
                && st.stx_rdev_minor == 0,
        ),
        Err(rustix::io::Errno::NOENT) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Reports whether `path` is a whiteout (path-based form of [`is_whiteout_at`]).
pub fn is_whiteout(path: &Path) -> io::Result<bool> {
    let (dir, name) = split(path)?;
    is_whiteout_at(dir.as_fd(), name)
}

/// Marks the directory open at `dir` opaque (`trusted.overlay.opaque=y`).
pub fn set_opaque(dir: BorrowedFd<'_>) -> io::Result<()> {
    rustix::fs::fsetxattr(dir, OPAQUE_XATTR, b"y", XattrFlags::empty())?;
    Ok(())
}

/// Marks the directory at `path` opaque (path-based form of [`set_opaque`]).
pub fn set_opaque_path(path: &Path) -> io::Result<()> {
    set_opaque(open_dir(path)?.as_fd())
}

/// Reports whether the directory open at `dir` is opaque.
pub fn is_opaque_fd(dir: BorrowedFd<'_>) -> io::Result<bool> {
    let mut buf = [0u8; 8];
    match rustix::fs::fgetxattr(dir, OPAQUE_XATTR, &mut buf) {
        Ok(n) => Ok(&buf[..n] == b"y"),
        Err(rustix::io::Errno::NODATA | rustix::io::Errno::NOTSUP | rustix::io::Errno::RANGE) => {
            Ok(false)
        }
        Err(e) => Err(e.into()),
    }
}

/// Reports whether the directory at `path` is opaque (path-based form of [`is_opaque_fd`]).
pub fn is_opaque(path: &Path) -> io::Result<bool> {
    is_opaque_fd(open_dir(path)?.as_fd())
}

fn open_dir(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc_o_directory())
        .open(path)
}

fn libc_o_directory() -> i32 {
    rustix::fs::OFlags::DIRECTORY.bits() as i32
}

fn split(path: &Path) -> io::Result<(File, &OsStr)> {
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} has no final component", path.display()),
        )
    })?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    Ok((open_dir(parent)?, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_multi_component_names() {
        let dir = File::open("/").unwrap();
        for name in ["", ".", "..", "a/b"] {
            let err = whiteout_at(dir.as_fd(), OsStr::new(name)).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{name:?}");
        }
    }

    #[test]
    fn regular_files_and_missing_entries_are_not_whiteouts() {
        let dir =
            std::env::temp_dir().join(format!("kcore-overlay-wh-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("file"), b"x").unwrap();
        let file_is = is_whiteout(&dir.join("file"));
        let missing_is = is_whiteout(&dir.join("missing"));
        let opaque = is_opaque(&dir);
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(!file_is.unwrap());
        assert!(!missing_is.unwrap());
        assert!(!opaque.unwrap());
        // A character device other than 0/0 is not a whiteout.
        assert!(!is_whiteout(Path::new("/dev/null")).unwrap());
    }
}
