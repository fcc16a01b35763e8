//! Entries packed as Gradle packs them (a gzip'd ustar archive, `METADATA` first), for the
//! tests, the fuzzer's seeds and the status page's screenshot: one packer instead of one per
//! test crate.

use std::io::Write;

use flate2::write::GzEncoder;
use flate2::Compression;

/// A tar archive of `files` (name, contents), in order, with the two zero blocks that end it.
pub fn tar(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, data) in files {
        out.extend_from_slice(&header(name, data.len() as u64, b'0'));
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

/// `data` gzip-compressed.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(data).expect("writing to a Vec");
    encoder.finish().expect("writing to a Vec")
}

/// The `METADATA` of a task as Gradle 4 writes it, host and user names included (the daemon
/// must drop them).
pub fn metadata(task_type: &str, path: &str, execution_ms: u64) -> String {
    format!(
        "#Generated origin information\nexecutionTime={execution_ms}\npath={}\n\
         hostName=sample-host\ncreationTime=1796537662186\nbuildInvocationId=sample\n\
         rootPath=/home/sample-user/project\ntype={task_type}_Decorated\nuserName=sample-user\n\
         operatingSystem=Linux\ngradleVersion=4.4.1\n",
        path.replace(':', "\\:")
    )
}

/// A whole entry: `METADATA` for the task, then one output file of `output_len` bytes.
pub fn entry(task_type: &str, path: &str, execution_ms: u64, output_len: usize) -> Vec<u8> {
    let meta = metadata(task_type, path, execution_ms);
    let output: Vec<u8> = (0..output_len).map(|i| (i % 251) as u8).collect();
    gzip(&tar(&[
        ("METADATA", meta.as_bytes()),
        ("property-output/out.bin", &output),
    ]))
}

/// A ustar header block for a file of `size` bytes.
pub fn header(name: &str, size: u64, flag: u8) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[..name.len().min(100)].copy_from_slice(&name.as_bytes()[..name.len().min(100)]);
    h[100..108].copy_from_slice(b"0000644\0");
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
    h[136..148].copy_from_slice(b"00000000000\0");
    h[156] = flag;
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    h
}
