//! An answering bot on the native SDK: goes online, answers every inbound
//! call, plays a WAV file (or a 440 Hz tone) to the caller, records what it
//! hears to a WAV file, and hangs up after N seconds.
//!
//! ```text
//! audin-server --dev &            # the dev server on 127.0.0.1:8080
//! cargo run -p audin-operator --features tokio --example bot -- \
//!     --server http://127.0.0.1:8080 --play hello.wav --record heard-{sid}.wav --seconds 10
//! audin-server sim call --server http://127.0.0.1:8080 --from +14155550100 --to +390299999999
//! ```
//!
//! Options: `--server URL` (default `http://127.0.0.1:8080`), `--numbers
//! ID,ID` (default: every number of the account), `--operator-ref REF`
//! (default `bot`), `--play FILE` (16-bit PCM WAV, any rate, mono or
//! stereo: downmixed, and resampled to 8 kHz with `audin-codec`'s
//! anti-aliased resampler), `--record FILE` (`{sid}` is replaced by the
//! call id; 8 kHz 16-bit mono), `--seconds N` (hang up after N s, default
//! 10), `--calls N` (exit after N calls; default 0 = run until Ctrl-C).
//!
//! Tokens come from the dev server's `POST /api/operator/token`, the seed
//! README's example backend: the bot never holds an API key.

use audin_codec::Resampler;
use audin_operator::core::{CallState, Event, TokenGrant};
use audin_operator::{AudinOperator, AudioIo, Call, PcmFrame};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone)]
struct Options {
    server: String,
    numbers: Vec<String>,
    operator_ref: String,
    play: Option<PathBuf>,
    record: Option<String>,
    seconds: u64,
    calls: usize,
}

fn parse_args() -> Result<Options, String> {
    let mut o = Options {
        server: "http://127.0.0.1:8080".into(),
        numbers: Vec::new(),
        operator_ref: "bot".into(),
        play: None,
        record: None,
        seconds: 10,
        calls: 0,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--server" => o.server = value()?,
            "--numbers" => o.numbers = value()?.split(',').map(str::to_string).collect(),
            "--operator-ref" => o.operator_ref = value()?,
            "--play" => o.play = Some(value()?.into()),
            "--record" => o.record = Some(value()?),
            "--seconds" => o.seconds = value()?.parse().map_err(|e| format!("--seconds: {e}"))?,
            "--calls" => o.calls = value()?.parse().map_err(|e| format!("--calls: {e}"))?,
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(o)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let options = parse_args()?;
    let prompt = match &options.play {
        Some(path) => Arc::new(read_wav_8k(path)?),
        None => Arc::new(tone(440.0, 8_000)),
    };
    let op = build_operator(&options)?;
    let mut events = op.events();
    let numbers = match options.numbers.clone() {
        ids if !ids.is_empty() => ids,
        _ => op
            .list_phone_numbers()
            .await?
            .into_iter()
            .map(|n| n.id)
            .collect(),
    };
    let availability = op.go_online(numbers).await?;
    println!(
        "online on {:?} (rejected {:?})",
        availability.accepted, availability.rejected
    );

    let mut handled = 0;
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Ok(Event::IncomingCall { call }) => {
                    println!("ringing: {} from {}", call.call_sid, call.from);
                    if let Some(call) = op.call(&call.call_sid) {
                        call.accept();
                        let task = tokio::spawn(serve(call, options.clone(), prompt.clone()));
                        handled += 1;
                        if options.calls > 0 && handled >= options.calls {
                            task.await?;
                            break;
                        }
                    }
                }
                Ok(Event::Error { code, message, .. }) => eprintln!("error {code}: {message}"),
                Ok(Event::PresenceStateChanged { state }) => println!("presence: {state:?}"),
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => eprintln!("missed {n} events"),
                Err(_) => break,
            },
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    op.go_offline().await?;
    Ok(())
}

fn build_operator(options: &Options) -> Result<AudinOperator, audin_operator::core::OperatorError> {
    let token_url = format!(
        "{}/api/operator/token",
        options.server.trim_end_matches('/')
    );
    let operator_ref = options.operator_ref.clone();
    let http = reqwest::Client::new();
    AudinOperator::builder(&options.server)
        .client_name("audin-bot/0.1")
        .get_token(move || {
            let (http, url, operator_ref) = (http.clone(), token_url.clone(), operator_ref.clone());
            async move {
                let response = http
                    .post(url)
                    .json(&serde_json::json!({ "operatorRef": operator_ref, "displayName": "Bot" }))
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                let body: serde_json::Value = response.json().await.map_err(|e| e.to_string())?;
                Ok(TokenGrant {
                    token: body["token"].as_str().unwrap_or_default().to_string(),
                    expires_at: body["expiresAt"].as_str().map(str::to_string),
                })
            }
        })
        .build()
}

/// Plays, records and hangs up one answered call.
async fn serve(call: Call, options: Options, prompt: Arc<Vec<i16>>) {
    let sid = call.call_sid();
    if call.wait_for(CallState::Active).await.state != CallState::Active {
        println!("{sid} ended before it started");
        return;
    }
    println!("{sid} answered; hanging up in {} s", options.seconds);
    let player = tokio::spawn(play(call.audio(), prompt));
    let recorder = tokio::spawn(record(call.audio()));
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_secs(options.seconds)) => call.hangup(),
        _ = call.ended() => {}
    }
    let info = call.ended().await;
    player.abort();
    let heard = recorder.await.unwrap_or_default();
    println!(
        "{sid} ended: {:?}, heard {:.1} s",
        info.end_reason,
        heard.len() as f64 / 8_000.0
    );
    if let Some(template) = &options.record {
        let path = template.replace("{sid}", &sid);
        match write_wav(Path::new(&path), &heard) {
            Ok(()) => println!("recorded to {path}"),
            Err(e) => eprintln!("cannot write {path}: {e}"),
        }
    }
}

/// Loops the prompt in real time, one 20 ms frame per tick.
async fn play(audio: AudioIo, prompt: Arc<Vec<i16>>) {
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let mut frames = prompt.chunks(160).cycle();
    loop {
        tick.tick().await;
        let mut frame: PcmFrame = [0; 160];
        if let Some(chunk) = frames.next() {
            frame[..chunk.len()].copy_from_slice(chunk);
        }
        audio.send_pcm(&frame);
    }
}

/// Everything the far end says, until the call ends.
async fn record(audio: AudioIo) -> Vec<i16> {
    let mut heard = Vec::new();
    while let Some(pcm) = audio.recv_pcm().await {
        heard.extend_from_slice(&pcm);
    }
    heard
}

fn tone(hz: f64, samples: usize) -> Vec<i16> {
    (0..samples)
        .map(|n| (8_000.0 * (2.0 * std::f64::consts::PI * hz * n as f64 / 8_000.0).sin()) as i16)
        .collect()
}

// ── minimal WAV I/O (16-bit PCM) ─────────────────────────────────────────

/// Reads a 16-bit PCM WAV, downmixes to mono and resamples to 8 kHz.
fn read_wav_8k(path: &Path) -> Result<Vec<i16>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if bytes.len() < 12 || &bytes[0..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return Err(format!("{} is not a WAV file", path.display()));
    }
    let (mut format, mut data) = (None, None);
    let mut at = 12;
    while at + 8 <= bytes.len() {
        let id = &bytes[at..at + 4];
        let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
        let body = &bytes[at + 8..(at + 8 + len).min(bytes.len())];
        match id {
            b"fmt " if body.len() >= 16 => format = Some(body.to_vec()),
            b"data" => data = Some(body.to_vec()),
            _ => {}
        }
        at += 8 + len + (len & 1);
    }
    let (format, data) = format.zip(data).ok_or("WAV without fmt or data chunk")?;
    let u16_at = |i: usize| u16::from_le_bytes([format[i], format[i + 1]]);
    let (kind, channels, bits) = (u16_at(0), usize::from(u16_at(2)), u16_at(14));
    let rate = u32::from_le_bytes(format[4..8].try_into().unwrap());
    if kind != 1 || bits != 16 || channels == 0 {
        return Err(format!(
            "need 16-bit PCM WAV, got format {kind}, {bits} bits"
        ));
    }
    let mono: Vec<f32> = data
        .chunks_exact(2 * channels)
        .map(|frame| {
            let sum: f32 = frame
                .chunks_exact(2)
                .map(|s| f32::from(i16::from_le_bytes([s[0], s[1]])))
                .sum();
            sum / channels as f32 / 32_768.0
        })
        .collect();
    let narrow = if rate == 8_000 {
        mono
    } else {
        let mut resampler = Box::new(Resampler::passthrough());
        resampler
            .configure(rate, 8_000)
            .map_err(|e| format!("cannot resample {rate} Hz: {e:?}"))?;
        let mut out = vec![0.0; resampler.max_output_len(mono.len())];
        let n = resampler.process(&mono, &mut out);
        out.truncate(n);
        out
    };
    Ok(narrow
        .iter()
        .map(|&x| (x * 32_767.0).clamp(-32_768.0, 32_767.0) as i16)
        .collect())
}

/// Writes 8 kHz 16-bit mono PCM as a WAV file.
fn write_wav(path: &Path, samples: &[i16]) -> std::io::Result<()> {
    let data_len = (samples.len() * 2) as u32;
    let mut out = Vec::with_capacity(44 + samples.len() * 2);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&1u16.to_le_bytes()); // mono
    out.extend_from_slice(&8_000u32.to_le_bytes());
    out.extend_from_slice(&16_000u32.to_le_bytes()); // byte rate
    out.extend_from_slice(&2u16.to_le_bytes()); // block align
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        out.extend_from_slice(&s.to_le_bytes());
    }
    std::fs::write(path, out)
}
