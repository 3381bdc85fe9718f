//! Loop-mounted file systems, one per volume: the local provisioner's opt-in real
//! capacity limit (the StorageClass parameter `fsType`).
//!
//! The volume `<root>/<name>` is the mount point of a file system made in the sparse
//! file `<root>/<name>.img`, as large as the claim asks. The file is attached to a free
//! loop device with auto-clear, so the mount is the only thing holding the device: the
//! kernel detaches it when the file system is unmounted, and a mount that fails
//! detaches it at once. Writes past the capacity fail with `ENOSPC`, as on a disk of
//! that size. Expansion grows the file, tells the loop device (`LOOP_SET_CAPACITY`) and
//! grows the mounted file system online with `resize2fs`; a node without
//! `CAP_SYS_RESOURCE` (these hosts' containers) may not, and grows it offline once no
//! pod uses the volume (see [`grow`]).
//!
//! The mount lives until the volume is deleted, `kcored reset` runs, or the host
//! reboots; [`mount`] is idempotent and is called again wherever the volume is used, so
//! a volume whose mount went away comes back with its data.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// The file systems a volume can be made with (those `resize2fs` grows online).
pub const FS_TYPES: &[&str] = &["ext4", "ext3", "ext2"];

const LOOP_CONTROL: &str = "/dev/loop-control";

// <linux/loop.h>
const LOOP_SET_FD: libc::c_ulong = 0x4C00;
const LOOP_CLR_FD: libc::c_ulong = 0x4C01;
const LOOP_SET_STATUS64: libc::c_ulong = 0x4C04;
const LOOP_SET_CAPACITY: libc::c_ulong = 0x4C07;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LO_FLAGS_AUTOCLEAR: u32 = 4;

/// `struct loop_info64`.
#[repr(C)]
struct LoopInfo64 {
    device: u64,
    inode: u64,
    rdevice: u64,
    offset: u64,
    sizelimit: u64,
    number: u32,
    encrypt_type: u32,
    encrypt_key_size: u32,
    flags: u32,
    file_name: [u8; 64],
    crypt_name: [u8; 64],
    encrypt_key: [u8; 32],
    init: [u64; 2],
}

/// `struct loop_config`.
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// Errors of loop-mounted volumes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoopFsError {
    /// The class asks for a file system volumes cannot be made with.
    #[error("fsType {0:?} is not supported (one of ext4, ext3, ext2)")]
    Unsupported(String),
    /// This host lacks what loop-mounted volumes need.
    #[error("this node cannot make loop-mounted volumes: {0}")]
    Unavailable(String),
    /// A volume needs a size.
    #[error("a loop-mounted volume needs a storage request of at least 1Mi")]
    TooSmall,
    /// A system call or file operation failed.
    #[error("{op} {}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or device involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Mounting or unmounting the file system failed.
    #[error(transparent)]
    Mount(kcore_ns::Error),
    /// The file system can grow only offline, and a pod uses the volume.
    #[error("the file system grows once no pod uses the volume (this node may not resize a mounted file system: no CAP_SYS_RESOURCE)")]
    InUse,
    /// A tool (`mkfs.ext4`, `resize2fs`) failed.
    #[error("{tool} {} exited with {status}: {stderr}", path.display())]
    Tool {
        /// The tool.
        tool: String,
        /// The image or device it ran on.
        path: PathBuf,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// What it said.
        stderr: String,
    },
}

type Result<T, E = LoopFsError> = std::result::Result<T, E>;

fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> LoopFsError {
    let path = path.into();
    move |source| LoopFsError::Io { op, path, source }
}

/// The backing file of the volume mounted on `dir`.
pub(crate) fn image_of(dir: &Path) -> PathBuf {
    let mut s = dir.as_os_str().to_owned();
    s.push(".img");
    PathBuf::from(s)
}

/// Finds a tool on `PATH` or in the system's sbin directories.
fn tool(name: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| LoopFsError::Unavailable(format!("no {name} on PATH or in /usr/sbin")))
}

/// Whether this host can make volumes with `fs_type`: the type is supported, there is
/// a loop control device, and `mkfs.<fs_type>` is installed.
pub fn check(fs_type: &str) -> Result<()> {
    if !FS_TYPES.contains(&fs_type) {
        return Err(LoopFsError::Unsupported(fs_type.to_owned()));
    }
    if !Path::new(LOOP_CONTROL).exists() {
        return Err(LoopFsError::Unavailable(format!("no {LOOP_CONTROL}")));
    }
    tool(&format!("mkfs.{fs_type}")).map(drop)
}

/// Runs a tool; an exit code outside `ok` is an error with what it said.
fn run(tool_name: &str, args: &[&std::ffi::OsStr], on: &Path, ok: &[i32]) -> Result<()> {
    let exe = tool(tool_name)?;
    let out = Command::new(&exe)
        .args(args)
        .output()
        .map_err(io("run", &exe))?;
    if !out.status.code().is_some_and(|c| ok.contains(&c)) {
        return Err(LoopFsError::Tool {
            tool: tool_name.to_owned(),
            path: on.to_owned(),
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(())
}

/// Makes a volume of `size` bytes with a fresh `fs_type` file system and mounts it on
/// `dir` (made if missing), writable by every user as a directory volume is. On failure
/// nothing is left behind; a file system already in the image (an earlier call was
/// interrupted before the volume was recorded) is kept.
pub fn create(dir: &Path, size: u64, fs_type: &str) -> Result<()> {
    check(fs_type)?;
    if size < 1 << 20 {
        return Err(LoopFsError::TooSmall);
    }
    let image = image_of(dir);
    let _g = lock();
    let made = (|| {
        // a whole volume an interrupted provisioning left is taken as made; a partial
        // one is made again
        if fs_bytes(&image).is_err() {
            let f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&image)
                .map_err(io("create", &image))?;
            f.set_len(size).map_err(io("size", &image))?;
            drop(f);
            // no blocks reserved for root: the whole capacity is the pod's
            run(
                &format!("mkfs.{fs_type}"),
                &[
                    "-q".as_ref(),
                    "-F".as_ref(),
                    "-m".as_ref(),
                    "0".as_ref(),
                    image.as_os_str(),
                ],
                &image,
                &[0],
            )?;
        }
        mount_locked(dir, fs_type)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777))
            .map_err(io("chmod", dir))
    })();
    if made.is_err() {
        let _ = unmount_locked(dir);
        let _ = std::fs::remove_file(&image);
        let _ = std::fs::remove_dir(dir);
    }
    made
}

/// The device mounted on `dir` in this mount namespace, if any.
pub(crate) fn mounted_device(dir: &Path) -> Option<PathBuf> {
    let mi = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let want = dir.to_string_lossy();
    // the last mount on a path is the one seen there
    mi.lines().rev().find_map(|l| {
        let mut f = l.split(' ');
        let point = f.nth(4)?;
        if unescape(point) != want {
            return None;
        }
        let mut rest = f.skip_while(|x| *x != "-");
        rest.next();
        rest.next(); // the file system type
        rest.next().map(|s| PathBuf::from(unescape(s)))
    })
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 4 <= b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Attaches `image` to a free loop device with auto-clear; returns the open device
/// and its path.
fn attach(image: &Path) -> Result<(File, PathBuf)> {
    let backing = OpenOptions::new()
        .read(true)
        .write(true)
        .open(image)
        .map_err(io("open", image))?;
    let ctl = File::open(LOOP_CONTROL).map_err(io("open", LOOP_CONTROL))?;
    // another process may take the free device first: then ask again
    for _ in 0..16 {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device number.
        let n = unsafe { libc::ioctl(ctl.as_raw_fd(), LOOP_CTL_GET_FREE as _) };
        if n < 0 {
            return Err(io("find a free loop device through", LOOP_CONTROL)(
                std::io::Error::last_os_error(),
            ));
        }
        let path = PathBuf::from(format!("/dev/loop{n}"));
        let dev = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io("open", &path))?;
        // SAFETY: all-zero is a valid `loop_info64` (plain integers and byte arrays).
        let mut info: LoopInfo64 = unsafe { std::mem::zeroed() };
        info.flags = LO_FLAGS_AUTOCLEAR;
        let name = image.as_os_str().as_encoded_bytes();
        let len = name.len().min(info.file_name.len() - 1);
        info.file_name[..len].copy_from_slice(&name[..len]);
        let cfg = LoopConfig {
            fd: backing.as_raw_fd() as u32,
            block_size: 0,
            info,
            reserved: [0; 8],
        };
        // SAFETY: `dev` is an open loop device and `cfg` a `loop_config` that outlives
        // the call; the kernel only reads it.
        let r = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CONFIGURE as _, &cfg) };
        let r = if r < 0
            && matches!(
                std::io::Error::last_os_error().raw_os_error(),
                Some(libc::EINVAL | libc::ENOTTY)
            ) {
            // kernels before 5.8: two steps
            // SAFETY: LOOP_SET_FD takes the backing file's descriptor by value.
            let r = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_SET_FD as _, backing.as_raw_fd()) };
            if r == 0 {
                // SAFETY: `cfg.info` is a `loop_info64` that outlives the call.
                let s = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_SET_STATUS64 as _, &cfg.info) };
                if s < 0 {
                    let e = std::io::Error::last_os_error();
                    detach(&dev);
                    return Err(io("configure", &path)(e));
                }
            }
            r
        } else {
            r
        };
        if r == 0 {
            return Ok((dev, path));
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EBUSY) {
            return Err(io("attach a loop device for", image)(e));
        }
    }
    Err(io("attach a loop device for", image)(
        std::io::Error::from_raw_os_error(libc::EBUSY),
    ))
}

fn detach(dev: &File) {
    // SAFETY: LOOP_CLR_FD takes no argument.
    unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CLR_FD as _) };
}

/// Serializes what this process does to loop volumes: the provisioner and the pod
/// workers both mount them, and an offline resize must not race a mount.
static LOCK: Mutex<()> = Mutex::new(());

fn lock() -> MutexGuard<'static, ()> {
    LOCK.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The loop device `image` is attached to, if any.
fn attached_device(image: &Path) -> Option<PathBuf> {
    let want = image.to_string_lossy();
    std::fs::read_dir("/sys/block")
        .ok()?
        .flatten()
        .find_map(|e| {
            let b = std::fs::read_to_string(e.path().join("loop/backing_file")).ok()?;
            (b.trim_end() == want).then(|| Path::new("/dev").join(e.file_name()))
        })
}

/// The size in bytes of the ext2/3/4 file system in `image`, from its superblock.
fn fs_bytes(image: &Path) -> Result<u64> {
    use std::os::unix::fs::FileExt;
    let f = File::open(image).map_err(io("open", image))?;
    let mut sb = [0u8; 1024];
    f.read_exact_at(&mut sb, 1024)
        .map_err(io("read the superblock of", image))?;
    let u32_at = |o: usize| u32::from_le_bytes([sb[o], sb[o + 1], sb[o + 2], sb[o + 3]]);
    if u16::from_le_bytes([sb[0x38], sb[0x39]]) != 0xEF53 {
        return Err(io("read the superblock of", image)(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "no ext2/3/4 file system",
        )));
    }
    let mut blocks = u64::from(u32_at(4));
    // INCOMPAT_64BIT: the high half of the block count
    if u32_at(0x60) & 0x80 != 0 {
        blocks |= u64::from(u32_at(0x150)) << 32;
    }
    Ok(blocks << (10 + u32_at(24).min(6)))
}

/// Mounts the volume's file system on `dir` unless something is mounted there already.
/// A file system still in use elsewhere (a pod's bind mount outlived this mount) is
/// mounted from the loop device it is on, never from a second one.
pub fn mount(dir: &Path, fs_type: &str) -> Result<()> {
    let _g = lock();
    mount_locked(dir, fs_type)
}

fn mount_locked(dir: &Path, fs_type: &str) -> Result<()> {
    if mounted_device(dir).is_some() {
        return Ok(());
    }
    let image = image_of(dir);
    std::fs::create_dir_all(dir).map_err(io("create", dir))?;
    let flags = kcore_ns::mount::MountFlags {
        nosuid: true,
        nodev: true,
        ..kcore_ns::mount::MountFlags::NONE
    };
    if let Some(path) = attached_device(&image) {
        return kcore_ns::mount::mount_fs(fs_type, &path.to_string_lossy(), dir, flags, None)
            .map_err(LoopFsError::Mount);
    }
    let (dev, path) = attach(&image)?;
    let r = kcore_ns::mount::mount_fs(fs_type, &path.to_string_lossy(), dir, flags, None);
    if let Err(e) = r {
        detach(&dev);
        return Err(LoopFsError::Mount(e));
    }
    tracing::debug!(volume = %dir.display(), device = %path.display(), "mounted a loop volume");
    Ok(())
}

/// Unmounts the volume on `dir` if mounted (the loop device goes with it once nothing
/// else uses the file system); lazily if the file system is still busy.
#[cfg(test)]
pub fn unmount(dir: &Path) -> Result<()> {
    let _g = lock();
    unmount_locked(dir)
}

fn unmount_locked(dir: &Path) -> Result<()> {
    while mounted_device(dir).is_some() {
        if kcore_ns::mount::unmount(dir, false).is_err() {
            kcore_ns::mount::unmount(dir, true).map_err(LoopFsError::Mount)?;
        }
    }
    Ok(())
}

/// Deletes the volume: unmounts it, then removes its image and its directory.
pub fn delete(dir: &Path) -> Result<()> {
    let _g = lock();
    unmount_locked(dir)?;
    let image = image_of(dir);
    match std::fs::remove_file(&image) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io("remove", image)(e)),
        _ => {}
    }
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io("remove", dir)(e)),
        _ => Ok(()),
    }
}

/// Grows the volume on `dir` to `size` bytes: the image, the loop device, then the file
/// system. Online where the node may (`resize2fs` on a mounted file system needs
/// `CAP_SYS_RESOURCE`); otherwise offline, which needs the volume unused: while a pod
/// uses it this fails with [`LoopFsError::InUse`], and a later call finishes the job.
/// A file system already as large does nothing.
pub fn grow(dir: &Path, size: u64, fs_type: &str) -> Result<()> {
    let _g = lock();
    mount_locked(dir, fs_type)?;
    let image = image_of(dir);
    if fs_bytes(&image)? >= size {
        return Ok(());
    }
    let f = OpenOptions::new()
        .write(true)
        .open(&image)
        .map_err(io("open", &image))?;
    if f.metadata().map_err(io("stat", &image))?.len() < size {
        f.set_len(size).map_err(io("grow", &image))?;
    }
    drop(f);
    let dev_path = mounted_device(dir).ok_or_else(|| {
        io("find the device of", dir)(std::io::Error::from(std::io::ErrorKind::NotFound))
    })?;
    let dev = File::open(&dev_path).map_err(io("open", &dev_path))?;
    // SAFETY: LOOP_SET_CAPACITY takes no argument.
    if unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_SET_CAPACITY as _) } < 0 {
        return Err(io("update the capacity of", &dev_path)(
            std::io::Error::last_os_error(),
        ));
    }
    drop(dev);
    match run("resize2fs", &[dev_path.as_os_str()], &dev_path, &[0]) {
        Err(LoopFsError::Tool { stderr, .. }) if stderr.contains("Permission denied") => {}
        other => return other,
    }
    // offline: only when nothing but this mount holds the file system
    unmount_locked(dir)?;
    if attached_device(&image).is_some() {
        mount_locked(dir, fs_type)?;
        return Err(LoopFsError::InUse);
    }
    let grown = run(
        "e2fsck",
        &["-f".as_ref(), "-p".as_ref(), image.as_os_str()],
        &image,
        &[0, 1],
    )
    .and_then(|()| run("resize2fs", &[image.as_os_str()], &image, &[0]));
    mount_locked(dir, fs_type)?;
    grown
}

/// Unmounts every volume mounted directly below `root` (their images stay).
pub fn unmount_all(root: &Path) -> Result<()> {
    let Ok(rd) = std::fs::read_dir(root) else {
        return Ok(());
    };
    let _g = lock();
    for e in rd.flatten() {
        let p = e.path();
        if image_of(&p).is_file() {
            unmount_locked(&p)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Why this host cannot run the real tests, if it cannot.
    fn cannot() -> Option<String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Some("needs root".into());
        }
        check("ext4").err().map(|e| e.to_string())
    }

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape(r"/a\040b/c"), "/a b/c");
        assert_eq!(unescape(r"/plain\0"), r"/plain\0");
        assert_eq!(image_of(Path::new("/v/pvc-1")), Path::new("/v/pvc-1.img"));
    }

    #[test]
    fn unsupported_file_systems_and_tiny_volumes_are_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("v");
        assert!(matches!(
            create(&dir, 16 << 20, "vfat"),
            Err(LoopFsError::Unsupported(_))
        ));
        if check("ext4").is_ok() {
            assert!(matches!(
                create(&dir, 4096, "ext4"),
                Err(LoopFsError::TooSmall)
            ));
        }
        assert!(!dir.exists() && !image_of(&dir).exists());
    }

    /// A volume holds its capacity and no more, grows online, and leaves no mount, loop
    /// device or file behind when deleted.
    #[test]
    #[ignore = "needs root"]
    fn a_loop_volume_enforces_its_capacity_grows_and_is_deleted() {
        if let Some(why) = cannot() {
            eprintln!("skipped: {why}");
            return;
        }
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join(format!("pvc-test-{}", std::process::id()));
        struct Cleanup(PathBuf);
        impl Drop for Cleanup {
            fn drop(&mut self) {
                let _ = delete(&self.0);
            }
        }
        let _guard = Cleanup(dir.clone());
        create(&dir, 8 << 20, "ext4").expect("create");
        let dev = mounted_device(&dir).expect("mounted");
        assert!(dev.to_string_lossy().starts_with("/dev/loop"), "{dev:?}");
        // sparse: the image takes far less than its size
        use std::os::unix::fs::MetadataExt;
        let img = std::fs::metadata(image_of(&dir)).expect("image");
        assert_eq!(img.len(), 8 << 20);
        assert!(
            img.blocks() * 512 < 8 << 20,
            "{} bytes allocated",
            img.blocks() * 512
        );
        // writes past the capacity fail with ENOSPC
        let fill = |name: &str, mib: usize| -> std::io::Result<()> {
            let mut f = File::create(dir.join(name))?;
            for _ in 0..mib {
                f.write_all(&[7u8; 1 << 20])?;
            }
            f.sync_all()
        };
        let err = fill("big", 16).expect_err("16 MiB into an 8 MiB volume");
        assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
        std::fs::remove_file(dir.join("big")).expect("rm");
        fill("keep", 1).expect("1 MiB fits");
        // idempotent mount; after an unmount the data comes back with the mount
        mount(&dir, "ext4").expect("mount again");
        unmount(&dir).expect("unmount");
        assert!(mounted_device(&dir).is_none());
        assert!(
            !dir.join("keep").exists(),
            "the data is in the image, not the directory"
        );
        mount(&dir, "ext4").expect("remount");
        assert_eq!(
            std::fs::metadata(dir.join("keep")).expect("kept").len(),
            1 << 20
        );
        // grow while "a pod" (a bind mount) uses it: online where the node may, else
        // refused until the user is gone, with the data intact
        let user = tmp.path().join("user");
        std::fs::create_dir(&user).expect("mkdir");
        kcore_ns::mount::bind(&dir, &user, false, kcore_ns::mount::MountFlags::NONE).expect("bind");
        match grow(&dir, 32 << 20, "ext4") {
            Ok(()) => eprintln!("grown online"),
            Err(LoopFsError::InUse) => {
                assert_eq!(
                    std::fs::metadata(user.join("keep")).expect("kept").len(),
                    1 << 20
                );
                assert!(
                    mounted_device(&dir).is_some(),
                    "mounted again after the attempt"
                );
                kcore_ns::mount::unmount(&user, false).expect("unmount the user");
                grow(&dir, 32 << 20, "ext4").expect("grow offline");
            }
            Err(e) => panic!("grow: {e:?}"),
        }
        let _ = kcore_ns::mount::unmount(&user, true);
        assert_eq!(
            std::fs::metadata(dir.join("keep")).expect("kept").len(),
            1 << 20
        );
        assert!(fs_bytes(&image_of(&dir)).expect("superblock") >= 32 << 20);
        grow(&dir, 32 << 20, "ext4").expect("a second grow to the same size does nothing");
        assert_eq!(
            std::fs::metadata(image_of(&dir)).expect("image").len(),
            32 << 20
        );
        fill("big", 16).expect("16 MiB into a 32 MiB volume");
        // delete: the mount, the loop device, the image and the directory go
        let dev = mounted_device(&dir).expect("mounted");
        delete(&dir).expect("delete");
        assert!(mounted_device(&dir).is_none());
        assert!(!dir.exists() && !image_of(&dir).exists());
        let backing = dev
            .file_name()
            .map(|n| {
                PathBuf::from("/sys/block")
                    .join(n)
                    .join("loop/backing_file")
            })
            .expect("name");
        let still = std::fs::read_to_string(&backing).unwrap_or_default();
        assert!(
            !still.contains(&*dir.to_string_lossy()),
            "{} is still attached to {still}",
            dev.display()
        );
    }
}
