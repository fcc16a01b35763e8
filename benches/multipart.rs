//! What completing a multipart upload costs: the assembly of the parts into one disk-tier
//! entry, with `copy_file_range` (the bytes stay in the kernel) against the read/write fallback
//! (every byte through a buffer of the process), and with parts off the 256 KiB block grid
//! (the block table is then computed by reading the body back).
//!
//! `cargo bench --bench multipart [-- SIZE_MIB PART_MIB]` (default: 1024 MiB in 16 MiB parts)
//! prints, per case, the wall time of `complete`, the process's CPU time in user and kernel
//! mode, and its `rchar`/`syscr` from `/proc/self/io` (bytes and calls of read-like system
//! calls; `copy_file_range` counts its bytes in `rchar` too, in one call per 64 MiB). The data
//! directory is a temp dir on the disk `TMPDIR` points at.

use std::time::{Duration, Instant};

use build_cache_proxy::store::disk::parts::CopyMethod;
use build_cache_proxy::store::disk::{Commit, DiskSettings, DiskTier};
use build_cache_proxy::store::multipart::{Completion, Multipart, MultipartSettings};
use build_cache_proxy::store::{ByteStream, Key, Namespace, ObjectAttrs};
use bytes::Bytes;

const CHUNK: usize = 1 << 20;

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let total_mib = args.first().copied().unwrap_or(1024);
    let part_mib = args.get(1).copied().unwrap_or(16);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let aligned = part_mib << 20;
        // A part size in no way a multiple of the block: every block straddles two parts' grids.
        let unaligned = aligned - 4321;
        let total = total_mib << 20;
        println!(
            "{:<40} {:>9} {:>9} {:>9} {:>10} {:>8}",
            "case", "wall s", "user s", "sys s", "rchar MiB", "syscr"
        );
        for round in 0..3 {
            for (name, method, part) in [
                (
                    "copy_file_range, parts on the grid",
                    CopyMethod::Kernel,
                    aligned,
                ),
                (
                    "read/write, parts on the grid",
                    CopyMethod::ReadWrite,
                    aligned,
                ),
                (
                    "copy_file_range, parts off the grid",
                    CopyMethod::Kernel,
                    unaligned,
                ),
            ] {
                let case = format!("{name} #{}", round + 1);
                run_case(&case, method, total, part).await;
            }
        }
    });
}

async fn run_case(case: &str, method: CopyMethod, total: u64, part_size: u64) {
    let dir = tempfile::tempdir().unwrap();
    let disk = DiskTier::open(DiskSettings {
        dir: dir.path().join("data"),
        max_size: 4 * total + (1 << 30),
        verify_before_serve: 0,
        min_free: 0,
    })
    .await
    .unwrap();
    let uploads = Multipart::open(
        disk,
        MultipartSettings {
            copy: method,
            ..MultipartSettings::default()
        },
    )
    .await
    .unwrap();
    let key = Key::object(Namespace::new("bench").unwrap(), "cache.zip").unwrap();
    let id = uploads
        .create(&key, ObjectAttrs::default(), None)
        .await
        .unwrap();
    let data = Bytes::from(
        (0..CHUNK)
            .map(|i| (i as u8).wrapping_mul(31))
            .collect::<Vec<u8>>(),
    );
    let mut listed = Vec::new();
    let mut left = total;
    let mut number = 1;
    while left > 0 {
        let len = left.min(part_size);
        let etag = uploads
            .put_part(&key, &id, number, len, body(&data, len, number))
            .await
            .unwrap()
            .etag;
        listed.push((number, etag));
        left -= len;
        number += 1;
    }

    let before = Usage::now();
    let started = Instant::now();
    let Completion::Assembled(done) = uploads
        .complete(&key, &id, &listed, &Default::default())
        .await
        .unwrap()
    else {
        unreachable!("a first completion assembles");
    };
    let stats = done.stats;
    done.sealed.commit(Commit::Cached).await.unwrap();
    let wall = started.elapsed();
    let after = Usage::now();
    assert_eq!(done.meta.len, total);
    println!(
        "{case:<40} {:>9.2} {:>9.2} {:>9.2} {:>10.0} {:>8}",
        wall.as_secs_f64(),
        (after.user - before.user).as_secs_f64(),
        (after.system - before.system).as_secs_f64(),
        (after.rchar - before.rchar) as f64 / 1048576.0,
        after.syscr - before.syscr,
    );
    println!(
        "    copy {:.2} s, table {:.2} s, fsync {:.2} s; in kernel {} MiB, through the process {} MiB, re-read {} MiB",
        stats.copying.as_secs_f64(),
        stats.checking.as_secs_f64(),
        stats.syncing.as_secs_f64(),
        stats.in_kernel >> 20,
        stats.through_process >> 20,
        stats.reread >> 20
    );
}

/// `len` bytes of a part, in 1 MiB chunks that share one buffer (varied by the part number so
/// the parts' MD5s differ).
fn body(data: &Bytes, len: u64, number: u32) -> ByteStream {
    let mut first = data.to_vec();
    first[0] = number as u8;
    let first = Bytes::from(first);
    let chunks = (0..len.div_ceil(CHUNK as u64)).map(move |i| {
        let n = (len - i * CHUNK as u64).min(CHUNK as u64) as usize;
        let chunk = if i == 0 { &first } else { data };
        Ok(chunk.slice(..n))
    });
    let chunks: Vec<std::io::Result<Bytes>> = chunks.collect();
    Box::pin(futures_util::stream::iter(chunks))
}

struct Usage {
    user: Duration,
    system: Duration,
    rchar: u64,
    syscr: u64,
}

impl Usage {
    fn now() -> Usage {
        // utime and stime, fields 14 and 15 of /proc/self/stat, in USER_HZ ticks (100 on Linux);
        // the name (field 2) is in parentheses and may hold spaces, so count after it.
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
        let after_name = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = after_name.split(' ').collect();
        let ticks = |i: usize| Duration::from_millis(fields[i - 3].parse::<u64>().unwrap() * 10);
        let io = std::fs::read_to_string("/proc/self/io").unwrap();
        let field = |name: &str| -> u64 {
            io.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse().ok())
                .unwrap()
        };
        Usage {
            user: ticks(14),
            system: ticks(15),
            rchar: field("rchar:"),
            syscr: field("syscr:"),
        }
    }
}
