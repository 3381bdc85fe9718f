//! Mounting overlays with short relative option strings, without changing the process cwd.
//!
//! The overlay options name lower layers as `l/<short>` relative to the store root, which
//! keeps a 128-layer option string inside the kernel's one-page limit for mount data.
//! Relative paths in `mount(2)` resolve against the calling thread's working directory,
//! so the call runs on a short-lived helper thread that first unshares its filesystem
//! context (`unshare(CLONE_FS)`) and then `fchdir`s to the store root: the working
//! directory of the rest of the (possibly multithreaded) process never changes.

use std::ffi::CString;
use std::io;
use std::os::fd::BorrowedFd;

use rustix::mount::MountFlags;
use rustix::thread::UnshareFlags;

use crate::error::{Error, Result};

/// Options for [`LayerStore::mount`](crate::LayerStore::mount).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MountOptions {
    read_only: bool,
    extra: Vec<String>,
}

impl MountOptions {
    /// Default options: a writable container view (upper = the layer's `diff`).
    pub fn new() -> Self {
        Self::default()
    }

    /// Mounts the layer and all its parents read-only, as lower layers, with no upper
    /// layer: the read-only view of an image's layer chain.
    pub fn read_only(mut self, read_only: bool) -> Self {
        self.read_only = read_only;
        self
    }

    /// Adds an extra overlayfs option such as `index=off`, `metacopy=on` or `volatile`.
    ///
    /// The store sets `lowerdir`, `upperdir` and `workdir` itself; those are refused.
    /// Extra options are ignored when the view is a plain bind mount (a layer with no
    /// parents mounted writable, or a single layer mounted read-only).
    pub fn option(mut self, option: impl Into<String>) -> Self {
        self.extra.push(option.into());
        self
    }

    /// Whether the view is read-only.
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// The extra overlayfs options.
    pub fn extra_options(&self) -> &[String] {
        &self.extra
    }

    pub(crate) fn validate(&self) -> Result<()> {
        for option in &self.extra {
            let reject = |reason| {
                Err(Error::InvalidMountOption {
                    option: option.clone(),
                    reason,
                })
            };
            if option.is_empty() {
                return reject("empty");
            }
            if option.contains([',', '\0']) {
                return reject("contains ',' or NUL");
            }
            let key = option.split('=').next().unwrap_or_default();
            if matches!(
                key,
                "lowerdir" | "upperdir" | "workdir" | "lowerdir+" | "datadir+"
            ) {
                return reject("layer directories are set by the store");
            }
        }
        Ok(())
    }
}

/// Builds the overlay mount data string.
pub(crate) fn overlay_data(
    lowers: &[String],
    upper_work: Option<(&str, &str)>,
    extra: &[String],
) -> String {
    let mut data = String::with_capacity(lowers.len() * 30 + 128);
    data.push_str("lowerdir=");
    data.push_str(&lowers.join(":"));
    if let Some((upper, work)) = upper_work {
        data.push_str(",upperdir=");
        data.push_str(upper);
        data.push_str(",workdir=");
        data.push_str(work);
    }
    for option in extra {
        data.push(',');
        data.push_str(option);
    }
    data
}

/// The longest mount data string the kernel copies (one page, NUL included).
pub(crate) fn max_data_len() -> usize {
    rustix::param::page_size() - 1
}

/// A mount to perform with paths relative to the store root.
pub(crate) enum Request {
    /// `mount("overlay", target, "overlay", flags, data)`.
    Overlay {
        target: String,
        data: CString,
        read_only: bool,
    },
    /// A bind mount of `source` on `target`, optionally made read-only.
    Bind {
        source: String,
        target: String,
        read_only: bool,
    },
}

/// Performs `req` with relative paths resolved against `root`, on a helper thread.
pub(crate) fn mount_at(root: BorrowedFd<'_>, req: &Request) -> io::Result<()> {
    std::thread::scope(|scope| {
        scope
            .spawn(move || -> io::Result<()> {
                // SAFETY: CLONE_FS only gives this thread its own copy of the cwd, root
                // and umask; no file descriptors are unshared, so no other thread can
                // observe a descriptor table it does not know about.
                unsafe { rustix::thread::unshare_unsafe(UnshareFlags::FS) }?;
                rustix::process::fchdir(root)?;
                do_mount(req)
            })
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("mount helper thread panicked")))
    })
}

fn do_mount(req: &Request) -> io::Result<()> {
    match req {
        Request::Overlay {
            target,
            data,
            read_only,
        } => {
            let flags = if *read_only {
                MountFlags::RDONLY
            } else {
                MountFlags::empty()
            };
            rustix::mount::mount(
                "overlay",
                target.as_str(),
                "overlay",
                flags,
                data.as_c_str(),
            )?;
        }
        Request::Bind {
            source,
            target,
            read_only,
        } => {
            rustix::mount::mount_bind(source.as_str(), target.as_str())?;
            if *read_only {
                if let Err(e) = rustix::mount::mount_remount(
                    target.as_str(),
                    MountFlags::BIND | MountFlags::RDONLY,
                    "",
                ) {
                    let _ = rustix::mount::unmount(
                        target.as_str(),
                        rustix::mount::UnmountFlags::DETACH,
                    );
                    return Err(e.into());
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_string_uses_relative_names() {
        let lowers = vec!["l/AAA".to_owned(), "l/BBB".to_owned()];
        assert_eq!(
            overlay_data(
                &lowers,
                Some(("x/diff", "x/work")),
                &["index=off".to_owned()]
            ),
            "lowerdir=l/AAA:l/BBB,upperdir=x/diff,workdir=x/work,index=off"
        );
        assert_eq!(overlay_data(&lowers, None, &[]), "lowerdir=l/AAA:l/BBB");
    }

    #[test]
    fn extra_options_are_checked() {
        MountOptions::new().option("index=off").validate().unwrap();
        for bad in [
            "",
            "a,b",
            "lowerdir=/x",
            "upperdir=/y",
            "workdir=/z",
            "lowerdir+=/w",
        ] {
            assert!(
                matches!(
                    MountOptions::new().option(bad).validate(),
                    Err(Error::InvalidMountOption { .. })
                ),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn a_max_depth_stack_fits_in_a_page() {
        let lowers: Vec<String> = (0..=crate::MAX_DEPTH)
            .map(|_| format!("l/{}", "A".repeat(crate::id::SHORT_ID_LEN)))
            .collect();
        let id = "x".repeat(crate::MAX_ID_LEN);
        let upper = format!("{id}/diff");
        let work = format!("{id}/work");
        let data = overlay_data(&lowers[1..], Some((&upper, &work)), &[]);
        assert!(data.len() <= 4095, "{}", data.len());
        assert!(overlay_data(&lowers, None, &[]).len() <= 4095);
    }
}
