// A headless baresip 1.0.0 (Debian `baresip-core`) as the phone on the far
// side of a SIP trunk, for the browser SDK's SIP test. The minimum of the
// testkit's Rust far end (crates/testkit/src/sip/baresip.rs) in node: its
// own temporary directory with `config` and `accounts`, SIP on a loopback
// port chosen at run time, a WAV as its microphone (`aufile`), recordings
// of what it hears (`sndfile`), and one `ctrl_tcp` connection for commands
// and events.
//
//   import { baresipMissing, sipToolsRequired, startBaresip, readWav, analyseTone } from "./harness/baresip.mjs";
//
// Why one connection: baresip 1.0.0's ctrl_tcp serves one connection at a
// time (a second one replaces the first), so commands and events share it.

import { spawn } from "node:child_process";
import { createSocket } from "node:dgram";
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { connect, createServer } from "node:net";
import { tmpdir } from "node:os";
import { delimiter, join } from "node:path";

/** Where Debian's baresip-core puts its modules. */
export const MODULE_DIR = "/usr/lib/baresip/modules";
/** Set (to anything but `0` or empty) to make absent SIP tools a failure, as `cargo xtask test` does. */
export const REQUIRE_ENV = "AUDIN_REQUIRE_SIP_TOOLS";

const LOOPBACK = "127.0.0.1";
const COMMAND_TIMEOUT_MS = 10_000;
const QUIT_GRACE_MS = 3_000;
const START_ATTEMPTS = 3;
/** ctrl_tcp's events are < 1 KB; anything this big is a broken stream. */
const MAX_NETSTRING = 1 << 20;
const MODULES = ["g711.so", "aufile.so", "alsa.so", "sndfile.so"];

/** Every baresip this process started and has not reaped: killed if node exits first. */
const live = new Set();
process.on("exit", () => {
  for (const child of live) child.kill("SIGKILL");
});

/** A text from baresip or the network, quoted and cut for an error message. */
const shown = (text) => JSON.stringify(String(text).slice(0, 64));

/** Whether `name` is an executable file on PATH. */
function onPath(name) {
  return (process.env.PATH ?? "").split(delimiter).some((dir) => dir && existsSync(join(dir, name)));
}

/** Whether REQUIRE_ENV asks for the SIP far ends to be present. */
export function sipToolsRequired() {
  const v = process.env[REQUIRE_ENV];
  return v !== undefined && v !== "" && v !== "0";
}

/**
 * Why baresip cannot run here (`false` when it can). The test decides
 * whether that is a skip or, with {@link sipToolsRequired}, a failure.
 * @returns {string | false}
 */
export function baresipMissing() {
  let missing;
  if (!onPath("baresip")) missing = "`baresip` is not on PATH";
  else if (!existsSync(MODULE_DIR)) missing = `${MODULE_DIR} does not exist`;
  return missing ? `${missing} (Debian package baresip-core: run \`cargo xtask setup\`)` : false;
}

/** Resolves once `server` listens (or rejects with the bind error). */
function listening(server, port) {
  return new Promise((ok, fail) => {
    server.once("error", fail);
    server.listen(port, LOOPBACK, () => ok(server));
  });
}

/** Binds a UDP socket on `port`; resolves to it. */
function udpBound(port) {
  return new Promise((ok, fail) => {
    const s = createSocket("udp4");
    s.once("error", (e) => {
      s.close();
      fail(e);
    });
    s.bind(port, LOOPBACK, () => ok(s));
  });
}

/**
 * A base port P whose P and P+1 are free on loopback for TCP and UDP right
 * now (SIP on P, baresip's unasked TLS on P+1), and a free TCP port for
 * ctrl_tcp. Another process can still take them before baresip binds:
 * start-up retries then.
 */
async function reservePorts() {
  for (let i = 0; i < 50; i++) {
    const held = [];
    try {
      const first = await listening(createServer(), 0);
      held.push(first);
      const base = first.address().port;
      if (base >= 65535) continue;
      held.push(await listening(createServer(), base + 1));
      held.push(await udpBound(base));
      held.push(await udpBound(base + 1));
      const ctrl = await listening(createServer(), 0);
      held.push(ctrl);
      return { sipPort: base, ctrlPort: ctrl.address().port };
    } catch {
      // Taken: probe another range.
    } finally {
      for (const h of held) h.close();
    }
  }
  throw new Error("found no free loopback ports for baresip in 50 tries");
}

/** The last `lines` lines of baresip's log, without its 100 ms status lines. */
function logTail(path, lines = 30) {
  let text;
  try {
    text = readFileSync(path, "utf8");
  } catch (e) {
    return `(cannot read ${path}: ${e.message})`;
  }
  const kept = text
    .split(/[\r\n]/)
    .map((l) => l.trimEnd())
    .filter((l) => l && !(l.trimStart().startsWith("[") && l.includes("audio=") && l.includes("(bit/s)")));
  return kept.slice(-lines).join("\n");
}

/**
 * The `config` and `accounts` texts. `source` is a 16-bit PCM mono WAV
 * played once: baresip 1.0.0 hangs the call up at its end ("end of file"),
 * so it must outlast every call.
 */
function renderFiles({ user, sourceWav, sourceRate, dir, sipPort, ctrlPort }) {
  // No ring/ringback WAVs on `audio_path`: nothing plays on `audio_alert`
  // (`alsa,null` is unpaced and would spin a core while a call rings).
  const noSounds = join(dir, "no-sounds");
  const recordings = join(dir, "recordings");
  mkdirSync(noSounds);
  mkdirSync(recordings);
  const config = [
    ["poll_method", "epoll"],
    ["sip_listen", `${LOOPBACK}:${sipPort}`],
    // 1.0.0 takes an address here; `lo` fails ("No such device").
    ["net_interface", LOOPBACK],
    ["call_local_timeout", "120"],
    ["call_max_calls", "4"],
    ["audio_path", noSounds],
    // `alsa,null` is fine as a player (decoding is paced by RTP), never as
    // a source (it never blocks).
    ["audio_player", "alsa,null"],
    ["audio_source", `aufile,${sourceWav}`],
    ["audio_alert", "alsa,null"],
    ["ausrc_srate", String(sourceRate)],
    ["ausrc_channels", "1"],
    ["audio_level", "no"],
    ["module_path", MODULE_DIR],
    ...MODULES.map((m) => ["module", m]),
    ["module_tmp", "account.so"],
    ["module_app", "menu.so"],
    ["module_app", "ctrl_tcp.so"],
    ["ctrl_tcp_listen", `${LOOPBACK}:${ctrlPort}`],
    ["snd_path", recordings],
  ];
  const account = `<sip:${user}@${LOOPBACK}:${sipPort}>;regint=0;answermode=manual;audio_codecs=pcmu,pcma\n`;
  return { config: config.map(([k, v]) => `${k}\t${v}\n`).join(""), account };
}

/**
 * Reads netstrings (`<len>:<json>,`) from `socket`, calling `onMessage`
 * with each parsed JSON value and `onClose(reason)` once at the end.
 */
function readNetstrings(socket, onMessage, onClose) {
  let buf = Buffer.alloc(0);
  let done = false;
  const close = (reason) => {
    if (done) return;
    done = true;
    onClose(reason);
    socket.destroy();
  };
  socket.on("data", (chunk) => {
    buf = Buffer.concat([buf, chunk]);
    for (;;) {
      const colon = buf.indexOf(0x3a);
      if (colon < 0) {
        if (buf.length > 9) close(`netstring length too long: ${shown(buf.toString("latin1", 0, 16))}`);
        return;
      }
      const head = buf.toString("latin1", 0, colon);
      if (!/^[0-9]{1,8}$/.test(head)) return close(`bad netstring length ${shown(head)}`);
      const len = Number(head);
      if (len > MAX_NETSTRING) return close(`netstring of ${len} bytes is over ${MAX_NETSTRING}`);
      if (buf.length < colon + 1 + len + 1) return;
      const body = buf.subarray(colon + 1, colon + 1 + len);
      if (buf[colon + 1 + len] !== 0x2c) return close("netstring does not end with `,`");
      buf = buf.subarray(colon + 1 + len + 1);
      let value;
      try {
        value = JSON.parse(body.toString("utf8"));
      } catch {
        return close(`non-JSON ctrl_tcp message ${shown(body.toString("utf8"))}`);
      }
      onMessage(value);
    }
  });
  socket.on("end", () => close("baresip closed it"));
  socket.on("error", (e) => close(`control connection error: ${e.message}`));
}

/** Connects to ctrl_tcp; rejects when nothing listens there (yet). */
function connectCtrl(port) {
  return new Promise((ok, fail) => {
    const s = connect({ host: LOOPBACK, port });
    s.once("connect", () => {
      s.removeListener("error", fail);
      s.setNoDelay(true);
      ok(s);
    });
    s.once("error", fail);
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * @typedef {{ type: string, param?: string, id?: string, peeruri?: string, direction?: string, atMs: number }} BaresipEvent
 */

/**
 * Starts `baresip -f DIR` with `sourceWav` as its microphone and recording
 * every call, and opens its control connection. Retries with new ports
 * when another process took one first.
 *
 * @param {object} options
 * @param {string} options.user SIP user part of its address (digits: it is the caller's number)
 * @param {string} options.sourceWav 16-bit PCM mono WAV, longer than any call
 * @param {number} options.sourceRate that WAV's sample rate
 * @param {number} [options.startTimeoutMs=10000]
 */
export async function startBaresip({ user, sourceWav, sourceRate, startTimeoutMs = 10_000 }) {
  // Anything else would end the user part or the account line.
  if (!/^[0-9A-Za-z+_.-]{1,64}$/.test(String(user))) throw new TypeError(`baresip user ${shown(user)} is not a plain SIP user part`);
  // `audio_source aufile,PATH`: a comma or white space would split it.
  if (/[,\s]/.test(sourceWav) || !existsSync(sourceWav)) throw new TypeError(`baresip source WAV ${shown(sourceWav)} is missing or has a comma or space`);
  if (!Number.isInteger(sourceRate) || sourceRate < 8000) throw new TypeError(`sourceRate ${sourceRate} is not an integer rate >= 8000`);
  let lastLog = "";
  for (let attempt = 0; attempt < START_ATTEMPTS; attempt++) {
    const r = await tryStart({ user, sourceWav, sourceRate, startTimeoutMs });
    if (r.started) return r.started;
    lastLog = r.portsBusyLog;
  }
  throw new Error(`baresip ${user}: its ports stayed taken by other processes in ${START_ATTEMPTS} attempts; log tail:\n${lastLog}`);
}

async function tryStart({ user, sourceWav, sourceRate, startTimeoutMs }) {
  const dir = mkdtempSync(join(tmpdir(), `audin-baresip-${user}-`));
  const { sipPort, ctrlPort } = await reservePorts();
  const { config, account } = renderFiles({ user, sourceWav, sourceRate, dir, sipPort, ctrlPort });
  writeFileSync(join(dir, "config"), config);
  writeFileSync(join(dir, "accounts"), account);
  const logPath = join(dir, "baresip.log");
  const logFd = openSync(logPath, "w");
  const child = spawn("baresip", ["-f", dir], { cwd: dir, stdio: ["ignore", logFd, logFd] });
  closeSync(logFd);
  live.add(child);
  const exited = new Promise((ok) => child.once("exit", (code, signal) => ok(code ?? signal)));
  exited.then(() => live.delete(child));
  let spawnError;
  child.once("error", (e) => (spawnError = e));
  const fail = async (message) => {
    if (!spawnError) {
      child.kill("SIGKILL");
      await exited;
    }
    live.delete(child);
    rmSync(dir, { recursive: true, force: true });
    return new Error(message);
  };

  const deadline = Date.now() + startTimeoutMs;
  for (;;) {
    if (spawnError) throw await fail(`cannot start \`baresip\`: ${spawnError.message} (install baresip-core with \`cargo xtask setup\`)`);
    if (child.exitCode !== null || child.signalCode !== null) {
      const log = logTail(logPath);
      rmSync(dir, { recursive: true, force: true });
      if (log.includes("Address already in use")) return { portsBusyLog: log };
      throw new Error(`baresip ${user} exited during start-up (${child.exitCode ?? child.signalCode}); log tail:\n${log}`);
    }
    let socket;
    try {
      socket = await connectCtrl(ctrlPort);
    } catch {
      socket = undefined;
    }
    if (socket) {
      const b = attach({ user, dir, sipPort, child, exited, socket, logPath });
      // ctrl_tcp 1.0.0 keeps running without its listener when the port is
      // taken: make sure the one answering is ours.
      const info = await b.command("reginfo").catch(() => "");
      if (info.includes(`@${LOOPBACK}:${sipPort}`)) return { started: b };
      // Not `quit`: the one answering may be another test's baresip.
      const log = logTail(logPath);
      socket.destroy();
      child.kill("SIGKILL");
      await exited;
      rmSync(dir, { recursive: true, force: true });
      return { portsBusyLog: log };
    }
    if (Date.now() >= deadline) {
      const log = logTail(logPath);
      throw await fail(`baresip ${user}: ctrl_tcp on ${LOOPBACK}:${ctrlPort} not ready within ${startTimeoutMs} ms; log tail:\n${log}`);
    }
    await sleep(25);
  }
}

function attach({ user, dir, sipPort, child, exited, socket, logPath }) {
  const started = Date.now();
  /** @type {BaresipEvent[]} */
  const events = [];
  /** Parallel to `events`: already returned by a wait (each event is returned once). */
  const taken = [];
  /** @type {Map<string, { ok: (data: string) => void, fail: (e: Error) => void }>} */
  const pending = new Map();
  /** @type {Set<() => void>} */
  const watchers = new Set();
  let closedReason;
  let nextToken = 1;
  const notify = () => {
    for (const w of [...watchers]) w();
  };

  readNetstrings(
    socket,
    (msg) => {
      if (msg?.response === true) {
        const p = pending.get(String(msg.token ?? ""));
        if (!p) return;
        pending.delete(String(msg.token));
        if (msg.ok === true) p.ok(typeof msg.data === "string" ? msg.data : "");
        else p.fail(new Error(`baresip ${user}: command failed: ${shown(String(msg.data ?? "").trim())}`));
      } else if (msg?.event === true) {
        events.push({
          type: String(msg.type ?? ""),
          param: typeof msg.param === "string" ? msg.param : undefined,
          id: typeof msg.id === "string" ? msg.id : undefined,
          peeruri: typeof msg.peeruri === "string" ? msg.peeruri : undefined,
          direction: typeof msg.direction === "string" ? msg.direction : undefined,
          atMs: Date.now() - started,
        });
        taken.push(false);
        notify();
      }
    },
    (reason) => {
      closedReason = reason;
      for (const p of pending.values()) p.fail(new Error(`baresip ${user}: control connection closed (${reason})`));
      pending.clear();
      notify();
    },
  );

  const describeEvent = (e) => (e.param === undefined ? e.type : `${e.type}(${shown(e.param)})`);
  let stopped = false;

  const b = {
    user,
    dir,
    pid: child.pid,
    /** `127.0.0.1:PORT`, SIP over UDP and TCP. */
    sipAddr: `${LOOPBACK}:${sipPort}`,
    /** Every event so far, in order. */
    events,
    /** Its stdout and stderr's last lines, for failure messages. */
    logTail: (lines = 30) => logTail(logPath, lines),

    /**
     * Sends a ctrl_tcp command; resolves to its `data` when baresip reports
     * `ok`, rejects when it does not, the connection ends, or no answer comes.
     * @param {string} command
     * @param {string} [params]
     * @returns {Promise<string>}
     */
    command(command, params) {
      if (closedReason !== undefined) return Promise.reject(new Error(`baresip ${user}: control connection closed (${closedReason})`));
      const token = `t${nextToken++}`;
      const body = JSON.stringify(params === undefined ? { command, token } : { command, params, token });
      const what = params === undefined ? command : `${command} ${params}`;
      return new Promise((ok, fail) => {
        const timer = setTimeout(() => {
          pending.delete(token);
          fail(new Error(`baresip ${user}: no response to \`${what}\` within ${COMMAND_TIMEOUT_MS} ms`));
        }, COMMAND_TIMEOUT_MS);
        pending.set(token, {
          ok: (d) => (clearTimeout(timer), ok(d)),
          fail: (e) => (clearTimeout(timer), fail(e)),
        });
        socket.write(`${Buffer.byteLength(body)}:${body},`);
      });
    },

    /** Calls `uri` (`sip:USER@HOST:PORT`). */
    async dial(uri) {
      if (!/^sip:[^\s,]+$/.test(uri)) throw new TypeError(`dial URI ${shown(uri)} is not a sip: URI without spaces or commas`);
      await b.command("dial", uri);
    },

    /** Ends the current call (BYE when established). */
    async hangup() {
      await b.command("hangup");
    },

    /**
     * The earliest event of `type` (matching `where`) not yet returned by a
     * wait, waiting up to `timeoutMs` for it. Each event is returned once,
     * so two CALL_CLOSED waits see two calls' closes.
     * @param {string} type e.g. "CALL_ESTABLISHED", "CALL_DTMF_START", "CALL_CLOSED"
     * @param {{ timeoutMs?: number, where?: (e: BaresipEvent) => boolean }} [options]
     * @returns {Promise<BaresipEvent>}
     */
    waitEvent(type, { timeoutMs = 8_000, where = () => true } = {}) {
      return new Promise((ok, fail) => {
        let timer;
        const look = () => {
          const i = events.findIndex((e, k) => !taken[k] && e.type === type && where(e));
          if (i >= 0) {
            taken[i] = true;
            finish();
            ok(/** @type {BaresipEvent} */ (events[i]));
          } else if (closedReason !== undefined) {
            finish();
            fail(new Error(`baresip ${user}: control connection closed (${closedReason}) while waiting for ${type}; log tail:\n${logTail(logPath, 20)}`));
          }
        };
        const finish = () => {
          clearTimeout(timer);
          watchers.delete(look);
        };
        timer = setTimeout(() => {
          finish();
          const seen = events
            .filter((e) => e.type !== "CALL_RTCP")
            .map(describeEvent)
            .join(", ");
          fail(new Error(`baresip ${user}: no ${type} event within ${timeoutMs} ms; events so far: [${seen}]; log tail:\n${logTail(logPath, 20)}`));
        }, timeoutMs);
        watchers.add(look);
        look();
      });
    },

    /**
     * Its recordings of what it heard (`…-dec.wav`, 8 kHz mono, one per
     * call, named by the second the call's audio started), oldest first.
     * libsndfile completes a WAV's header only when the call's audio closes:
     * read a finished call's file after its CALL_CLOSED.
     * @returns {string[]}
     */
    heardRecordings() {
      const rec = join(dir, "recordings");
      return readdirSync(rec)
        .filter((n) => n.endsWith("-dec.wav"))
        .sort()
        .map((n) => join(rec, n));
    },

    /**
     * `quit`, then SIGKILL if it has not exited after a grace period; its
     * directory is removed unless `keep` (then its path is printed).
     * @param {{ keep?: boolean }} [options]
     */
    async stop({ keep = false } = {}) {
      if (stopped) return;
      stopped = true;
      if (child.exitCode === null && child.signalCode === null) {
        // The answer may never come: quit closes the connection.
        await Promise.race([b.command("quit").catch(() => {}), sleep(QUIT_GRACE_MS)]);
        const timer = setTimeout(() => child.kill("SIGKILL"), QUIT_GRACE_MS);
        await exited;
        clearTimeout(timer);
      }
      socket.destroy();
      if (keep || process.env.AUDIN_KEEP_SIP_DIRS) process.stderr.write(`baresip ${user}: files kept in ${dir}\n`);
      else rmSync(dir, { recursive: true, force: true });
    },
  };
  return b;
}

/**
 * Parses a 16-bit PCM WAV (first channel) into `{ sampleRate, samples }`.
 * Lenient where recorders are: a `data` chunk whose declared size is 0 or
 * runs past the end (a file libsndfile is still writing) is read to the end.
 * @param {Buffer} buf
 * @returns {{ sampleRate: number, samples: Float32Array }}
 */
export function readWav(buf) {
  if (buf.length < 12 || buf.toString("ascii", 0, 4) !== "RIFF" || buf.toString("ascii", 8, 12) !== "WAVE") throw new Error("not a RIFF/WAVE file");
  let p = 12;
  let fmt;
  while (p + 8 <= buf.length) {
    const id = buf.toString("ascii", p, p + 4);
    const declared = buf.readUInt32LE(p + 4);
    const body = p + 8;
    const remaining = buf.length - body;
    if (id === "fmt ") {
      if (declared < 16 || remaining < 16) throw new Error(`WAV fmt chunk of ${Math.min(declared, remaining)} bytes`);
      fmt = { tag: buf.readUInt16LE(body), channels: buf.readUInt16LE(body + 2), sampleRate: buf.readUInt32LE(body + 4), bits: buf.readUInt16LE(body + 14) };
    } else if (id === "data") {
      if (!fmt) throw new Error("WAV data chunk before its fmt chunk");
      if (fmt.tag !== 1 || fmt.bits !== 16 || fmt.channels < 1 || fmt.sampleRate < 1) {
        throw new Error(`WAV is not 16-bit PCM (format ${fmt.tag}, ${fmt.bits} bits, ${fmt.channels} channels, ${fmt.sampleRate} Hz)`);
      }
      const len = declared === 0 || declared > remaining ? remaining : declared;
      const n = Math.floor(len / (2 * fmt.channels));
      const samples = new Float32Array(n);
      for (let i = 0; i < n; i++) samples[i] = buf.readInt16LE(body + i * 2 * fmt.channels) / 32768;
      return { sampleRate: fmt.sampleRate, samples };
    }
    p = body + declared + (declared & 1);
  }
  throw new Error("WAV without a data chunk");
}

/** RMS level in dBFS (-Infinity for silence; a full-scale sine is -3.01). */
export function rmsDbfs(samples) {
  let s = 0;
  for (const x of samples) s += x * x;
  return samples.length ? 10 * Math.log10(s / samples.length) : -Infinity;
}

/**
 * Frequency of a tone by zero crossings: rising crossings, interpolated
 * between samples, from the first to the last; `null` with fewer than 3.
 * @param {Float32Array} samples
 * @param {number} sampleRate
 */
export function zeroCrossingHz(samples, sampleRate) {
  let first = -1;
  let last = -1;
  let count = 0;
  for (let i = 1; i < samples.length; i++) {
    const a = /** @type {number} */ (samples[i - 1]);
    const b = /** @type {number} */ (samples[i]);
    if (a < 0 && b >= 0) {
      const at = i - 1 + a / (a - b);
      if (first < 0) first = at;
      last = at;
      count++;
    }
  }
  return count >= 3 ? ((count - 1) * sampleRate) / (last - first) : null;
}

/**
 * What a recording holds: the longest run of non-silent 20 ms blocks
 * (above -50 dBFS), trimmed by 10 % at each end so onsets and the jitter
 * buffer's first frames do not count, then its level, its frequency by zero
 * crossings and the share of its power at `expectHz` (Goertzel).
 * @param {Float32Array} samples
 * @param {number} sampleRate
 * @param {number} expectHz
 * @returns {{ activeSeconds: number, rmsDbfs: number, hz: number | null, share: number }}
 */
export function analyseTone(samples, sampleRate, expectHz) {
  const block = Math.round(sampleRate / 50);
  const active = [];
  for (let i = 0; i + block <= samples.length; i += block) active.push(rmsDbfs(samples.subarray(i, i + block)) > -50);
  let best = { start: 0, end: 0 };
  for (let k = 0; k < active.length; ) {
    if (!active[k]) {
      k++;
      continue;
    }
    let e = k;
    while (e < active.length && active[e]) e++;
    if ((e - k) * block > best.end - best.start) best = { start: k * block, end: e * block };
    k = e;
  }
  const len = best.end - best.start;
  const part = samples.subarray(best.start + Math.floor(len / 10), best.end - Math.floor(len / 10));
  const level = rmsDbfs(part);
  return {
    activeSeconds: len / sampleRate,
    rmsDbfs: level,
    hz: zeroCrossingHz(part, sampleRate),
    share: part.length ? goertzelPower(part, sampleRate, expectHz) / 10 ** (level / 10) : 0,
  };
}

/** Mean power of the `freq` component (a sine of amplitude A gives A²/2). */
function goertzelPower(samples, sampleRate, freq) {
  const c = 2 * Math.cos((2 * Math.PI * freq) / sampleRate);
  let s1 = 0;
  let s2 = 0;
  for (const x of samples) {
    const s0 = x + c * s1 - s2;
    s2 = s1;
    s1 = s0;
  }
  const amp = (2 * Math.sqrt(Math.max(0, s1 * s1 + s2 * s2 - c * s1 * s2))) / samples.length;
  return (amp * amp) / 2;
}
