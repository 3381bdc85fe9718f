//! GNU sparse members in every format (old-GNU `S` with extended sparse
//! headers, PAX 0.0, 0.1 and 1.0): written with holes, charged against the
//! unpack budget by the blocks they allocate, bombs refused with nothing
//! left behind, and real sparse files made by GNU tar unpacked with the
//! same content and holes.

mod common;

use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use common::{gzip, TempDir};
use kcore_image::{unpack_layer, Error, UnpackOptions};

const TIB: u64 = 1 << 40;

/// A 512-byte header, written byte by byte.
fn header(name: &str, kind: u8, size: u64, gnu: bool) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    octal(&mut h[100..108], 0o644);
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], 1_600_000_000);
    h[156] = kind;
    if gnu {
        h[257..265].copy_from_slice(b"ustar  \0");
    } else {
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
    }
    h
}

/// Octal, or GNU base-256 when the value does not fit (as GNU tar does
/// for sizes of 8 GiB and more).
fn octal(field: &mut [u8], v: u64) {
    let s = format!("{:0w$o}\0", v, w = field.len() - 1);
    if s.len() == field.len() {
        field.copy_from_slice(s.as_bytes());
    } else {
        field.fill(0);
        let n = field.len();
        field[n - 8..].copy_from_slice(&v.to_be_bytes());
        field[0] = 0x80;
    }
}

fn seal(mut h: [u8; 512]) -> [u8; 512] {
    h[148..156].fill(b' ');
    let sum: u64 = h.iter().map(|b| u64::from(*b)).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    h
}

fn pad(out: &mut Vec<u8>) {
    while out.len() % 512 != 0 {
        out.push(0);
    }
}

fn end(mut out: Vec<u8>) -> Vec<u8> {
    out.extend_from_slice(&[0u8; 1024]);
    out
}

/// One data byte per segment: segment `i` is the byte `b'a' + i % 26` at
/// offset `i * stride`.
fn segments(n: usize, stride: u64) -> Vec<(u64, u64)> {
    (0..n as u64).map(|i| (i * stride, 1)).collect()
}

fn data_of(segs: &[(u64, u64)]) -> Vec<u8> {
    segs.iter()
        .enumerate()
        .flat_map(|(i, (_, len))| vec![b'a' + (i % 26) as u8; *len as usize])
        .collect()
}

/// An old-GNU `S` member: four map entries in the header, 21 in each
/// extended sparse header after it.
fn old_gnu(name: &str, real_size: u64, segs: &[(u64, u64)]) -> Vec<u8> {
    let data = data_of(segs);
    let mut h = header(name, b'S', data.len() as u64, true);
    octal(&mut h[483..495], real_size);
    let (first, rest) = segs.split_at(segs.len().min(4));
    for (i, (off, len)) in first.iter().enumerate() {
        octal(&mut h[386 + 24 * i..398 + 24 * i], *off);
        octal(&mut h[398 + 24 * i..410 + 24 * i], *len);
    }
    h[482] = u8::from(!rest.is_empty());
    let mut out = seal(h).to_vec();
    let chunks: Vec<_> = rest.chunks(21).collect();
    for (k, chunk) in chunks.iter().enumerate() {
        let mut ext = [0u8; 512];
        for (i, (off, len)) in chunk.iter().enumerate() {
            octal(&mut ext[24 * i..24 * i + 12], *off);
            octal(&mut ext[24 * i + 12..24 * i + 24], *len);
        }
        ext[504] = u8::from(k + 1 < chunks.len());
        out.extend_from_slice(&ext);
    }
    out.extend_from_slice(&data);
    pad(&mut out);
    out
}

fn pax_record(k: &str, v: &str) -> String {
    let body = format!(" {k}={v}\n");
    let mut n = body.len() + 1;
    while n != body.len() + n.to_string().len() {
        n = body.len() + n.to_string().len();
    }
    format!("{n}{body}")
}

fn pax_member(records: &str, name: &str, data: &[u8]) -> Vec<u8> {
    let mut out = seal(header("PaxHeaders/x", b'x', records.len() as u64, false)).to_vec();
    out.extend_from_slice(records.as_bytes());
    pad(&mut out);
    out.extend_from_slice(&seal(header(name, b'0', data.len() as u64, false)));
    out.extend_from_slice(data);
    pad(&mut out);
    out
}

#[derive(Clone, Copy, Debug)]
enum Format {
    OldGnu,
    Pax00,
    Pax01,
    Pax10,
}

const FORMATS: [Format; 4] = [Format::OldGnu, Format::Pax00, Format::Pax01, Format::Pax10];

/// A layer holding one sparse file `name` in `format`.
fn sparse_layer(format: Format, name: &str, real_size: u64, segs: &[(u64, u64)]) -> Vec<u8> {
    let data = data_of(segs);
    let real = real_size.to_string();
    let member = match format {
        Format::OldGnu => old_gnu(name, real_size, segs),
        Format::Pax00 => {
            let mut r = pax_record("GNU.sparse.size", &real);
            r += &pax_record("GNU.sparse.numblocks", &segs.len().to_string());
            for (off, len) in segs {
                r += &pax_record("GNU.sparse.offset", &off.to_string());
                r += &pax_record("GNU.sparse.numbytes", &len.to_string());
            }
            pax_member(&r, name, &data)
        }
        Format::Pax01 => {
            let map: Vec<String> = segs.iter().map(|(o, l)| format!("{o},{l}")).collect();
            let mut r = pax_record("GNU.sparse.size", &real);
            r += &pax_record("GNU.sparse.numblocks", &segs.len().to_string());
            r += &pax_record("GNU.sparse.map", &map.join(","));
            pax_member(&r, name, &data)
        }
        Format::Pax10 => {
            let mut r = pax_record("GNU.sparse.major", "1");
            r += &pax_record("GNU.sparse.minor", "0");
            r += &pax_record("GNU.sparse.name", name);
            r += &pax_record("GNU.sparse.realsize", &real);
            let mut body = format!("{}\n", segs.len()).into_bytes();
            for (off, len) in segs {
                body.extend_from_slice(format!("{off}\n{len}\n").as_bytes());
            }
            pad(&mut body);
            body.extend_from_slice(&data);
            pax_member(&r, "GNUSparseFile.0/x", &body)
        }
    };
    end(member)
}

/// The data extents of a file (SEEK_DATA / SEEK_HOLE).
fn extents(path: &Path) -> Vec<(u64, u64)> {
    let f = File::open(path).unwrap();
    let len = f.metadata().unwrap().len();
    let mut out = Vec::new();
    let mut pos = 0u64;
    while pos < len {
        let data = match rustix::fs::seek(&f, rustix::fs::SeekFrom::Data(pos)) {
            Ok(d) => d,
            Err(rustix::io::Errno::NXIO) => break,
            Err(e) => panic!("SEEK_DATA: {e}"),
        };
        let hole = rustix::fs::seek(&f, rustix::fs::SeekFrom::Hole(data)).unwrap();
        out.push((data, hole));
        pos = hole;
    }
    out
}

fn read_at(path: &Path, off: u64, n: usize) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let f = File::open(path).unwrap();
    let mut buf = vec![0u8; n];
    f.read_exact_at(&mut buf, off).unwrap();
    buf
}

#[test]
fn a_huge_hole_costs_nothing_in_every_format() {
    // The old sparse bomb: a 1 TiB file with two bytes of data. Written
    // densely it filled the disk; as a hole it takes two blocks.
    let segs = [(0u64, 1u64), (TIB - 1, 1)];
    for format in FORMATS {
        let t = TempDir::new("hole");
        let dest = t.path().join("l");
        let layer = sparse_layer(format, "big", TIB, &segs);
        let opts = UnpackOptions::new().max_bytes(1 << 20);
        let st = unpack_layer(&layer[..], None, &dest, None, &opts)
            .unwrap_or_else(|e| panic!("{format:?}: {e:#?}"));
        assert_eq!(st.allocated, 2 * 4096, "{format:?}");
        let p = dest.join("big");
        let m = fs::metadata(&p).unwrap();
        assert_eq!(m.len(), TIB, "{format:?}");
        assert!(
            m.blocks() * 512 <= 64 * 1024,
            "{format:?}: {} blocks",
            m.blocks()
        );
        assert_eq!(read_at(&p, 0, 2), b"a\0", "{format:?}");
        assert_eq!(read_at(&p, TIB - 2, 2), b"\0b", "{format:?}");
        assert_eq!(read_at(&p, TIB / 2, 4), [0; 4], "{format:?}");
        assert!(!dest.join("GNUSparseFile.0").exists(), "{format:?}");
    }
}

#[test]
fn sparse_bombs_are_refused_within_the_budget_in_every_format() {
    // 2,000 one-byte segments 8 KiB apart: 2 KB of data, 8 MB of blocks.
    let segs = segments(2000, 8192);
    let real = 2000 * 8192;
    for format in FORMATS {
        let t = TempDir::new("bomb");
        let dest = t.path().join("l");
        let mut layer = sparse_layer(format, "bomb", real, &segs);
        // A harmless file first: the refused layer must not leave it.
        let mut first = seal(header("first", b'0', 3, true)).to_vec();
        first.extend_from_slice(b"one");
        pad(&mut first);
        first.append(&mut layer);
        let layer = gzip(&first);
        let opts = UnpackOptions::new().max_bytes(1 << 20);
        let err = unpack_layer(&layer[..], None, &dest, None, &opts).unwrap_err();
        match err {
            Error::BudgetExceeded {
                entry,
                needed,
                allocated,
                budget,
            } => {
                assert_eq!(entry, Path::new("bomb"), "{format:?}");
                assert_eq!(needed, 2000 * 4096, "{format:?}");
                assert_eq!(allocated, 4096, "{format:?}");
                assert_eq!(budget, 1 << 20, "{format:?}");
            }
            e => panic!("{format:?}: unexpected {e:#?}"),
        }
        assert!(
            !dest.exists(),
            "{format:?}: the failed layer is left behind"
        );
        // Within a larger budget the same layer unpacks, with its holes.
        let opts = UnpackOptions::new().max_bytes(16 << 20);
        let st = unpack_layer(&layer[..], None, &dest, None, &opts).unwrap();
        assert_eq!(st.allocated, 4096 + 2000 * 4096, "{format:?}");
        let p = dest.join("bomb");
        assert_eq!(fs::metadata(&p).unwrap().len(), real);
        assert_eq!(read_at(&p, 8192 * 27, 2), b"b\0", "{format:?}");
        assert!(fs::metadata(&p).unwrap().blocks() * 512 <= 2000 * 8192);
    }
}

#[test]
fn a_decompression_bomb_is_refused_before_its_data_is_written() {
    // 16 MiB of zeros in a regular file: gzip makes it ~16 KiB.
    let size = 16u64 << 20;
    let mut raw = seal(header("zeros", b'0', size, true)).to_vec();
    raw.resize(raw.len() + size as usize, 0);
    let raw = end(raw);
    let layer = gzip(&raw);
    assert!(layer.len() < (1 << 20));
    let t = TempDir::new("gzbomb");
    let dest = t.path().join("l");
    let opts = UnpackOptions::new().max_bytes(8 << 20);
    let err = unpack_layer(&layer[..], None, &dest, None, &opts).unwrap_err();
    assert!(
        matches!(err, Error::BudgetExceeded { needed, .. } if needed == size),
        "{err:#?}"
    );
    assert!(!dest.exists());
    // Megabytes of zeros after the end of the archive are refused too.
    let mut trailer = end(Vec::new());
    trailer.resize(17 << 20, 0);
    let err = unpack_layer(&gzip(&trailer)[..], None, &dest, None, &opts).unwrap_err();
    assert!(matches!(err, Error::Archive { .. }), "{err:#?}");
    assert!(!dest.exists());
}

#[test]
fn malformed_sparse_maps_are_refused_in_every_format() {
    type Case = (&'static str, u64, Vec<(u64, u64)>);
    let cases: [Case; 3] = [
        ("overlap", 100, vec![(0, 10), (5, 10)]),
        ("unsorted", 100, vec![(50, 1), (10, 1)]),
        ("beyond the end", 100, vec![(99, 2)]),
    ];
    for format in FORMATS {
        for (what, real, segs) in &cases {
            let t = TempDir::new("badmap");
            let dest = t.path().join("l");
            let layer = sparse_layer(format, "f", *real, segs);
            let err =
                unpack_layer(&layer[..], None, &dest, None, &UnpackOptions::new()).unwrap_err();
            assert!(
                matches!(err, Error::Archive { .. }),
                "{format:?} {what}: {err:#?}"
            );
            assert!(!dest.exists(), "{format:?} {what}");
        }
    }
    // A 1.0 map announcing more segments than accepted.
    let records = pax_record("GNU.sparse.major", "1")
        + &pax_record("GNU.sparse.minor", "0")
        + &pax_record("GNU.sparse.realsize", "10");
    let mut body = b"99999999999\n".to_vec();
    pad(&mut body);
    let layer = end(pax_member(&records, "GNUSparseFile.0/f", &body));
    let t = TempDir::new("badmap");
    let dest = t.path().join("l");
    let err = unpack_layer(&layer[..], None, &dest, None, &UnpackOptions::new()).unwrap_err();
    assert!(matches!(err, Error::Archive { .. }), "{err:#?}");
}

/// A sparse file like the ones systems have: data, holes, data, a hole at
/// the end.
fn make_sparse_file(path: &Path) {
    use std::os::unix::fs::FileExt;
    let f = File::create(path).unwrap();
    let block: Vec<u8> = (0..65536u32).map(|i| (i % 251) as u8 + 1).collect();
    f.write_all_at(&block, 0).unwrap();
    f.write_all_at(&block[..100], 10 << 20).unwrap();
    f.write_all_at(&block, 40 << 20).unwrap();
    f.set_len(64 << 20).unwrap();
}

#[test]
fn real_sparse_files_from_gnu_tar_keep_content_and_holes() {
    let version = Command::new("tar")
        .arg("--version")
        .output()
        .expect("GNU tar is needed for this test");
    assert!(
        String::from_utf8_lossy(&version.stdout).contains("GNU tar"),
        "this test needs GNU tar"
    );
    let t = TempDir::new("gnutar");
    let src = t.path().join("src");
    fs::create_dir(&src).unwrap();
    make_sparse_file(&src.join("lastlog"));
    let want_extents = extents(&src.join("lastlog"));
    if want_extents.len() < 2 {
        println!("skipping: this file system does not report holes (SEEK_HOLE)");
        return;
    }
    let want_blocks = fs::metadata(src.join("lastlog")).unwrap().blocks();
    let mut want = Vec::new();
    File::open(src.join("lastlog"))
        .unwrap()
        .read_to_end(&mut want)
        .unwrap();
    let variants: [&[&str]; 4] = [
        &["--format=gnu"],
        &["--format=posix", "--sparse-version=0.0"],
        &["--format=posix", "--sparse-version=0.1"],
        &["--format=posix", "--sparse-version=1.0"],
    ];
    for (i, args) in variants.iter().enumerate() {
        let archive = t.path().join(format!("a{i}.tar"));
        let st = Command::new("tar")
            .arg("--sparse")
            .args(*args)
            .arg("-C")
            .arg(&src)
            .arg("-cf")
            .arg(&archive)
            .arg("lastlog")
            .status()
            .unwrap();
        assert!(st.success(), "{args:?}");
        let tar_len = fs::metadata(&archive).unwrap().len();
        assert!(tar_len < 1 << 20, "{args:?}: GNU tar wrote {tar_len} bytes");
        let dest = t.path().join(format!("out{i}"));
        let opts = UnpackOptions::new().max_bytes(4 << 20);
        let layer = fs::read(&archive).unwrap();
        let st = unpack_layer(&layer[..], None, &dest, None, &opts)
            .unwrap_or_else(|e| panic!("{args:?}: {e:#?}"));
        assert!(st.allocated <= 4 << 20, "{args:?}");
        let out = dest.join("lastlog");
        assert!(
            out.exists(),
            "{args:?}: {:?}",
            fs::read_dir(&dest).unwrap().collect::<Vec<_>>()
        );
        let mut got = Vec::new();
        File::open(&out).unwrap().read_to_end(&mut got).unwrap();
        assert!(got == want, "{args:?}: content differs");
        assert_eq!(extents(&out), want_extents, "{args:?}");
        assert_eq!(
            fs::metadata(&out).unwrap().blocks(),
            want_blocks,
            "{args:?}"
        );
    }
}
