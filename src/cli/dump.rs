//! `stratalog dump`: print the batches of segment files, like Kafka's dump-log tool.
//!
//! Reads the files directly (no lock, no recovery), one batch at a time, so a segment of any
//! size is dumped in bounded memory.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use stratalog::format::{
    BATCH_HEADER_LEN, BatchHeader, FILE_HEADER_LEN, FileHeader, FileKind, crc_of,
};

use super::{CliError, context, is_broken_pipe};

/// Runs `dump` on a segment file or on every segment of a log directory.
pub fn run(path: &Path) -> Result<(), CliError> {
    let files = if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(context(format!("cannot list {}", path.display())))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "log") && p.is_file())
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(format!("no segment (.log) file in {}", path.display()).into());
        }
        files
    } else {
        vec![path.to_path_buf()]
    };
    let stdout = io::stdout();
    let mut out = stdout.lock();
    let mut bad_files = Vec::new();
    for file in &files {
        match dump_file(file, &mut out) {
            Ok(true) => {}
            Ok(false) => bad_files.push(file.display().to_string()),
            // The reader went away (`dump | head`): stop quietly.
            Err(e) if is_broken_pipe(&*e) => return Ok(()),
            Err(e) => return Err(context(format!("cannot dump {}", file.display()))(e)),
        }
    }
    match out.flush() {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(()),
        other => other?,
    }
    if bad_files.is_empty() {
        Ok(())
    } else {
        Err(format!("bad data in {}", bad_files.join(", ")).into())
    }
}

/// Base offset from a segment file name (`00000000000000000042.log`).
fn base_from_name(path: &Path) -> Option<u64> {
    stratalog::format::parse_segment_name(path.file_name()?.to_str()?)
}

/// Dumps one file; returns false if something in it was bad.
/// True if bytes `pos..len` of `file` are all zero (space preallocated ahead of the writer).
fn zeros_to_end(file: &File, mut pos: u64, len: u64) -> std::io::Result<bool> {
    let mut buf = vec![0u8; 1 << 20];
    while pos < len {
        let n = (len - pos).min(buf.len() as u64) as usize;
        file.read_exact_at(&mut buf[..n], pos)?;
        if buf[..n].iter().any(|&b| b != 0) {
            return Ok(false);
        }
        pos += n as u64;
    }
    Ok(true)
}

fn dump_file(path: &Path, out: &mut impl Write) -> Result<bool, CliError> {
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    writeln!(out, "dumping {} ({len} bytes)", path.display())?;
    let mut header = [0u8; FILE_HEADER_LEN];
    if len < FILE_HEADER_LEN as u64 {
        writeln!(
            out,
            "file header: truncated: {len} bytes, {FILE_HEADER_LEN} needed; stopping"
        )?;
        return Ok(false);
    }
    file.read_exact_at(&mut header, 0)?;
    // The base offset in the name, or else the one in the header, is the one expected.
    let base = base_from_name(path)
        .unwrap_or_else(|| u64::from_le_bytes(header[16..24].try_into().expect("8 bytes")));
    if let Err(e) = FileHeader::parse(&header, FileKind::Segment, base) {
        writeln!(out, "file header: invalid: {e}; stopping")?;
        return Ok(false);
    }
    let mut sound = true;
    let (mut batches, mut records) = (0u64, 0u64);
    let mut pos = FILE_HEADER_LEN as u64;
    let mut buf = Vec::new();
    while pos < len {
        let head_len = (len - pos).min(BATCH_HEADER_LEN as u64) as usize;
        buf.resize(head_len, 0);
        file.read_exact_at(&mut buf, pos)?;
        let header = match BatchHeader::parse(&buf) {
            Ok(h) => *h,
            Err(_) if zeros_to_end(&file, pos, len)? => {
                writeln!(
                    out,
                    "position={pos} preallocated space: {} zero bytes to the end of the file",
                    len - pos
                )?;
                break;
            }
            Err(e) => {
                writeln!(
                    out,
                    "position={pos} invalid batch header: {e}; stopping ({} bytes left unread)",
                    len - pos
                )?;
                sound = false;
                break;
            }
        };
        let size = u64::from(header.length.get());
        if pos + size > len {
            writeln!(
                out,
                "position={pos} base_offset={} batch of {size} bytes runs past the end of the file ({} bytes left); stopping",
                header.base_offset.get(),
                len - pos
            )?;
            sound = false;
            break;
        }
        buf.resize(size as usize, 0);
        file.read_exact_at(&mut buf, pos)?;
        let crc_ok = crc_of(&buf) == header.crc.get();
        sound &= crc_ok;
        writeln!(
            out,
            "position={pos} base_offset={} last_offset={} count={} epoch={} first_timestamp={} max_timestamp={} size={size} compression={} crc={}",
            header.base_offset.get(),
            header.last_offset(),
            header.record_count.get(),
            header.leader_epoch.get(),
            header.first_timestamp.get(),
            header.max_timestamp.get(),
            header.compression().name(),
            if crc_ok { "ok" } else { "bad" },
        )?;
        batches += 1;
        records += u64::from(header.record_count.get());
        pos += size;
    }
    writeln!(
        out,
        "{batches} batches, {records} records{}",
        if sound { "" } else { "; BAD DATA" }
    )?;
    Ok(sound)
}
