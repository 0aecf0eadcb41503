//! Writes a large sealed transcript to disk, exports it to an auditor key and verifies the
//! export, all streaming, then prints the process's peak memory. The target: a 200 MB
//! transcript exported and verified in under 64 MB of peak RSS.
//!
//! ```sh
//! cargo run --release -p hushwire --example transcript_at_scale -- 200   # size in MB
//! /usr/bin/time -v target/release/examples/transcript_at_scale 200      # independent RSS figure
//! ```

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::time::Instant;

use hushwire::IdentityKeyPair;
use hushwire::proto::Codec;
use hushwire::transcript::{
    AuditorKey, ContentType, Direction, ExportItem, ExportReader, ExportWriter, SealedRecord,
    TranscriptManifest, TranscriptRecord, TranscriptVerifier, TranscriptWriter,
};
use rand_core::UnwrapErr;

const CONTENT_LEN: usize = 1024;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let megabytes: u64 = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(200);
    let records = megabytes * 1024 * 1024 / CONTENT_LEN as u64;
    let dir = std::env::temp_dir().join(format!("hushwire-scale-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut rng = UnwrapErr(getrandom::SysRng);
    let device = IdentityKeyPair::generate(&mut rng);
    let auditor = AuditorKey::generate(&mut rng);

    // 1. Append `records` records, storing each sealed record length-prefixed on disk.
    let start = Instant::now();
    let mut writer = TranscriptWriter::new(1000, &mut rng);
    let mut checkpoints = Vec::new();
    let mut store = BufWriter::new(File::create(dir.join("records"))?);
    let content = vec![b'x'; CONTENT_LEN];
    for i in 0..records {
        let record = TranscriptRecord {
            direction: Direction::Sent,
            sender: device.public().fingerprint(),
            message_id: [0; 16],
            sent_at_ms: i,
            received_at_ms: i,
            content_type: ContentType::Text,
            content: content.clone(),
        };
        let appended = writer.append(&record, &device, i, &mut rng)?;
        let bytes = appended.record.to_bytes();
        store.write_all(&(bytes.len() as u32).to_be_bytes())?;
        store.write_all(&bytes)?;
        checkpoints.extend(appended.checkpoint);
        if i % 50_000 == 0 {
            eprintln!("appended {i}/{records}");
        }
    }
    checkpoints.push(writer.close(&device, records));
    store.flush()?;
    drop(store);
    let stored = std::fs::metadata(dir.join("records"))?.len();
    eprintln!(
        "append: {records} records, {:.1} MB stored, {:.2?}",
        stored as f64 / 1e6,
        start.elapsed()
    );

    // 2. Export: read records back one at a time, stream the export to disk.
    let start = Instant::now();
    let (mut export, header) =
        ExportWriter::new(&[*auditor.public()], &mut rng).ok_or("bad recipients")?;
    let mut out = BufWriter::new(File::create(dir.join("export"))?);
    out.write_all(&header)?;
    let manifest = TranscriptManifest {
        id: writer.id(),
        signer: device.public().clone(),
        key: writer.key().clone(),
        record_count: records,
    };
    out.write_all(&export.begin_transcript(&manifest, &checkpoints))?;
    let mut input = BufReader::new(File::open(dir.join("records"))?);
    let mut len = [0u8; 4];
    let mut buf = Vec::new();
    while input.read_exact(&mut len).is_ok() {
        buf.resize(u32::from_be_bytes(len) as usize, 0);
        input.read_exact(&mut buf)?;
        out.write_all(&export.record(&SealedRecord::from_bytes(&buf)?))?;
    }
    out.write_all(&export.end_transcript())?;
    out.write_all(&export.finish(&device))?;
    out.flush()?;
    drop(out);
    let exported = std::fs::metadata(dir.join("export"))?.len();
    let export_time = start.elapsed();
    eprintln!(
        "export: {:.1} MB in {export_time:.2?} ({:.0} MB/s)",
        exported as f64 / 1e6,
        exported as f64 / 1e6 / export_time.as_secs_f64()
    );

    // 3. The auditor reads the export in 64 KiB pieces and verifies as it goes.
    let start = Instant::now();
    let mut reader = ExportReader::new(&auditor);
    let mut file = File::open(dir.join("export"))?;
    let mut piece = vec![0u8; 64 * 1024];
    let mut manifest = None;
    let mut pending_checkpoints = Vec::new();
    let mut verifier: Option<TranscriptVerifier> = None;
    let mut opened = 0u64;
    loop {
        let n = file.read(&mut piece)?;
        if n == 0 {
            break;
        }
        for item in reader.feed(piece.get(..n).unwrap_or_default())? {
            match item {
                ExportItem::TranscriptStart(m) => manifest = Some(m),
                ExportItem::Checkpoint(c) => pending_checkpoints.push(c),
                ExportItem::Record(r) => {
                    let m = manifest.as_ref().ok_or("record before transcript start")?;
                    let v = verifier.get_or_insert_with(|| {
                        TranscriptVerifier::new(
                            m.id,
                            m.key.clone(),
                            *m.signer.signing_key(),
                            std::mem::take(&mut pending_checkpoints),
                        )
                    });
                    opened += u64::from(v.push(&r).is_some());
                }
                ExportItem::TranscriptEnd => {
                    let report = verifier.take().ok_or("empty transcript")?.finish()?;
                    eprintln!(
                        "verified: {} records, {} checkpoints, closed: {}",
                        report.records, report.checkpoints, report.closed
                    );
                }
            }
        }
    }
    // The exporter's signature over every transcript's final state is at the end: only now
    // are the records opened above to be trusted (docs/transcripts.md §6.6).
    let exporter = reader.finish()?;
    if exporter != *device.public() {
        return Err("the export is signed by another identity".into());
    }
    let verify_time = start.elapsed();
    eprintln!(
        "verify: {opened} records opened in {verify_time:.2?} ({:.0} MB/s)",
        exported as f64 / 1e6 / verify_time.as_secs_f64()
    );
    std::fs::remove_dir_all(&dir)?;

    let peak = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM"))
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "VmHWM: unavailable on this platform".into());
    println!(
        "transcript {:.1} MB, export {:.1} MB; peak memory {}",
        stored as f64 / 1e6,
        exported as f64 / 1e6,
        peak.trim_start_matches("VmHWM:").trim()
    );
    Ok(())
}
