// Test harness for @audin.ai/operator-sdk: a real headless Chromium, fake
// microphone WAVs, a loopback static file server for the package, a
// launcher for the audin-server binary, and the testkit's fault-injecting
// proxy (`fault-proxy`) driven from node.
//
//   import { launchBrowser, makeToneWav, startStaticServer, startAudinServer, startFaultProxy } from "./harness/index.mjs";
//
// Only loopback addresses are used. Set AUDIN_SKIP_BROWSER=1 to make
// `browserSkipReason()` return a reason (use it as node:test's `skip`).

import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { dirname, extname, join, resolve, sep } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

/** packages/operator-sdk */
export const SDK_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
/** Repository root. */
export const REPO_ROOT = resolve(SDK_ROOT, "..", "..");
/** Chromium from Debian (`cargo xtask setup`); override with AUDIN_CHROMIUM. */
export const CHROMIUM_PATH = process.env.AUDIN_CHROMIUM || "/usr/bin/chromium";

/**
 * Why browser tests must be skipped, or `false` to run them. Pass it as the
 * `skip` option of node:test's `test()` / `describe()`.
 * @returns {string | false}
 */
export function browserSkipReason() {
  if (process.env.AUDIN_SKIP_BROWSER === "1") return "AUDIN_SKIP_BROWSER=1";
  if (!existsSync(CHROMIUM_PATH)) return `no Chromium at ${CHROMIUM_PATH} (run cargo xtask setup)`;
  return false;
}

/**
 * Launches headless Chromium with a fake microphone (a persistent context in a
 * fresh temporary profile, removed again by `close()`).
 *
 * @param {object} [options]
 * @param {string} [options.wavPath] WAV file played as the microphone
 *   (see `makeToneWav`); without it Chromium's fake device plays a beep.
 * @param {string[]} [options.args] extra Chromium switches.
 * @param {boolean} [options.headless=true]
 * @returns {Promise<{ context: import("playwright-core").BrowserContext,
 *   page: import("playwright-core").Page, close: () => Promise<void> }>}
 */
export async function launchBrowser({ wavPath, args = [], headless = true } = {}) {
  const { chromium } = await import("playwright-core");
  const profile = mkdtempSync(join(tmpdir(), "audin-chromium-"));
  const switches = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
  ];
  if (wavPath) switches.push(`--use-file-for-fake-audio-capture=${resolve(wavPath)}`);
  let context;
  try {
    context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM_PATH,
      headless,
      args: [...switches, ...args],
    });
  } catch (err) {
    rmSync(profile, { recursive: true, force: true });
    throw err;
  }
  const page = context.pages()[0] ?? (await context.newPage());
  let closed = false;
  return {
    context,
    page,
    async close() {
      if (closed) return;
      closed = true;
      try {
        await context.close();
      } finally {
        rmSync(profile, { recursive: true, force: true });
      }
    },
  };
}

/**
 * Collects a page's console messages and uncaught errors (attach before
 * navigating); handy in assertion messages.
 * @param {import("playwright-core").Page} page
 * @returns {string[]}
 */
export function collectConsole(page) {
  const lines = [];
  page.on("console", (m) => lines.push(`[${m.type()}] ${m.text()}`));
  page.on("pageerror", (e) => lines.push(`[pageerror] ${e.stack ?? e.message}`));
  return lines;
}

/**
 * Writes a 16-bit PCM mono WAV holding a sine tone.
 *
 * @param {string} path
 * @param {object} [options]
 * @param {number} [options.freqHz=440]
 * @param {number} [options.seconds=2]
 * @param {number} [options.sampleRate=48000]
 * @param {number} [options.amplitude=0.5] peak, 0..1 of full scale
 * @returns {string} the path
 */
export function makeToneWav(path, { freqHz = 440, seconds = 2, sampleRate = 48000, amplitude = 0.5 } = {}) {
  const frames = Math.round(seconds * sampleRate);
  const dataBytes = frames * 2;
  const buf = Buffer.alloc(44 + dataBytes);
  buf.write("RIFF", 0, "ascii");
  buf.writeUInt32LE(36 + dataBytes, 4);
  buf.write("WAVE", 8, "ascii");
  buf.write("fmt ", 12, "ascii");
  buf.writeUInt32LE(16, 16); // fmt chunk size
  buf.writeUInt16LE(1, 20); // PCM
  buf.writeUInt16LE(1, 22); // mono
  buf.writeUInt32LE(sampleRate, 24);
  buf.writeUInt32LE(sampleRate * 2, 28); // byte rate
  buf.writeUInt16LE(2, 32); // block align
  buf.writeUInt16LE(16, 34); // bits per sample
  buf.write("data", 36, "ascii");
  buf.writeUInt32LE(dataBytes, 40);
  const peak = Math.max(0, Math.min(1, amplitude)) * 32767;
  for (let i = 0; i < frames; i++) {
    const s = Math.round(peak * Math.sin((2 * Math.PI * freqHz * i) / sampleRate));
    buf.writeInt16LE(s, 44 + i * 2);
  }
  writeFileSync(path, buf);
  return path;
}

const CONTENT_TYPES = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".cjs": "text/javascript; charset=utf-8",
  ".json": "application/json",
  ".map": "application/json",
  ".css": "text/css; charset=utf-8",
  ".wasm": "application/wasm",
  ".wav": "audio/wav",
  ".ts": "text/plain; charset=utf-8",
  ".txt": "text/plain; charset=utf-8",
};

/**
 * Serves `root` (default: packages/operator-sdk) read-only on 127.0.0.1 at
 * an ephemeral port, so tests can load dist/ and examples/. Extra in-memory
 * pages can be given as `{ "/path.html": "<html>…" }`.
 *
 * @param {object} [options]
 * @param {string} [options.root]
 * @param {Record<string, string>} [options.pages]
 * @returns {Promise<{ url: string, port: number, close: () => Promise<void> }>}
 *   `url` has no trailing slash, e.g. `http://127.0.0.1:41234`.
 */
export async function startStaticServer({ root = SDK_ROOT, pages = {} } = {}) {
  const base = resolve(root);
  const server = createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://127.0.0.1");
    const send = (status, type, body) => {
      res.writeHead(status, { "content-type": type, "cache-control": "no-store" });
      res.end(req.method === "HEAD" ? undefined : body);
    };
    if (req.method !== "GET" && req.method !== "HEAD") return send(405, "text/plain", "method not allowed");
    if (Object.hasOwn(pages, url.pathname)) {
      return send(200, CONTENT_TYPES[extname(url.pathname)] ?? "text/html; charset=utf-8", pages[url.pathname]);
    }
    let file = resolve(base, "." + decodeURIComponent(url.pathname));
    if (file !== base && !file.startsWith(base + sep)) return send(403, "text/plain", "forbidden");
    try {
      if (statSync(file).isDirectory()) file = join(file, "index.html");
      const body = readFileSync(file);
      send(200, CONTENT_TYPES[extname(file)] ?? "application/octet-stream", body);
    } catch {
      send(404, "text/plain", "not found");
    }
  });
  await new Promise((ok, fail) => {
    server.once("error", fail);
    server.listen(0, "127.0.0.1", ok);
  });
  const { port } = /** @type {import("node:net").AddressInfo} */ (server.address());
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    close: () =>
      new Promise((ok) => {
        server.closeAllConnections?.();
        server.close(() => ok());
      }),
  };
}

/** Cargo's target directory (honours CARGO_TARGET_DIR and config). */
export function cargoTargetDir() {
  const r = spawnSync("cargo", ["metadata", "--format-version", "1", "--no-deps"], {
    cwd: REPO_ROOT,
    encoding: "utf8",
    maxBuffer: 64 * 1024 * 1024,
  });
  if (r.status !== 0) throw new Error(`cargo metadata failed: ${r.stderr || r.error}`);
  return JSON.parse(r.stdout).target_directory;
}

/**
 * Path of a workspace binary, e.g. `cargoBinary("audin-server")` →
 * `<target>/release/audin-server` (it is not built here).
 * @param {string} name
 * @param {{ profile?: string }} [options] cargo profile directory (default "release")
 */
export function cargoBinary(name, { profile = "release" } = {}) {
  const exe = process.platform === "win32" ? `${name}.exe` : name;
  return join(cargoTargetDir(), profile === "dev" ? "debug" : profile, exe);
}

/**
 * Spawns a server binary (by default target/release/audin-server) and waits
 * until a stdout line matches `readyPattern`.
 *
 * @param {object} [options]
 * @param {string} [options.binary] path (default `cargoBinary("audin-server")`)
 * @param {string[]} [options.args]
 * @param {RegExp} [options.readyPattern] first capture group, if any, is the
 *   URL (default: a line mentioning `listening`/`ready` and an http URL)
 * @param {number} [options.timeoutMs=30000]
 * @param {Record<string, string>} [options.env] added to process.env
 * @param {string} [options.cwd] default: repository root
 * @param {boolean} [options.echo] copy the server's output to this process's
 *   stderr (default: when AUDIN_TEST_VERBOSE=1)
 * @returns {Promise<{ url: string | undefined, readyLine: string,
 *   stdoutLines: string[], stderrLines: string[],
 *   process: import("node:child_process").ChildProcess,
 *   kill: () => Promise<number | null> }>} `kill()` sends SIGTERM (SIGKILL
 *   after 5 s) and resolves to the exit code (null if ended by a signal).
 */
export async function startAudinServer({
  binary = cargoBinary("audin-server"),
  args = [],
  readyPattern = /\b(?:listening|ready)\b.*?(https?:\/\/[^\s/]+)/i,
  timeoutMs = 30_000,
  env = {},
  cwd = REPO_ROOT,
  echo = process.env.AUDIN_TEST_VERBOSE === "1",
} = {}) {
  if (!existsSync(binary)) throw new Error(`${binary} does not exist: build it first`);
  const child = spawn(binary, args, { cwd, env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  const stdoutLines = [];
  const stderrLines = [];
  createInterface({ input: child.stderr }).on("line", (l) => {
    stderrLines.push(l);
    if (echo) process.stderr.write(`[server:err] ${l}\n`);
  });
  const exited = new Promise((ok) => child.once("exit", (code, signal) => ok(code ?? signal)));

  const kill = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
    child.kill("SIGTERM");
    const timer = setTimeout(() => child.kill("SIGKILL"), 5_000);
    await exited;
    clearTimeout(timer);
    return child.exitCode;
  };

  const ready = await new Promise((ok, fail) => {
    const tail = () =>
      `\n--- stdout ---\n${stdoutLines.slice(-30).join("\n")}\n--- stderr ---\n${stderrLines.slice(-30).join("\n")}`;
    const timer = setTimeout(() => fail(new Error(`${binary}: no ready line within ${timeoutMs} ms${tail()}`)), timeoutMs);
    child.once("error", (err) => {
      clearTimeout(timer);
      fail(err);
    });
    exited.then((code) => {
      clearTimeout(timer);
      fail(new Error(`${binary} exited (${code}) before it was ready${tail()}`));
    });
    createInterface({ input: child.stdout }).on("line", (l) => {
      stdoutLines.push(l);
      if (echo) process.stderr.write(`[server] ${l}\n`);
      const m = readyPattern.exec(l);
      if (m) {
        clearTimeout(timer);
        ok({ line: l, url: m[1] });
      }
    });
  }).catch(async (err) => {
    await kill();
    throw err;
  });

  return { url: ready.url, readyLine: ready.line, stdoutLines, stderrLines, process: child, kill };
}

let faultProxyPath;

/**
 * The testkit's `fault-proxy` executable: $AUDIN_FAULT_PROXY_BIN, else built
 * by cargo (`cargo build -p audin-testkit --bin fault-proxy`, a no-op when it
 * is fresh) at the path cargo reports. Built at most once per process.
 * @returns {string}
 */
export function faultProxyBinary() {
  if (process.env.AUDIN_FAULT_PROXY_BIN) return process.env.AUDIN_FAULT_PROXY_BIN;
  if (faultProxyPath) return faultProxyPath;
  const r = spawnSync(
    "cargo",
    ["build", "-p", "audin-testkit", "--bin", "fault-proxy", "--message-format", "json-render-diagnostics"],
    { cwd: REPO_ROOT, encoding: "utf8", maxBuffer: 64 * 1024 * 1024, stdio: ["ignore", "pipe", "inherit"] },
  );
  if (r.status !== 0) throw new Error(`cargo build -p audin-testkit --bin fault-proxy failed (${r.status ?? r.error})`);
  for (const line of r.stdout.split("\n")) {
    let msg;
    try {
      msg = JSON.parse(line);
    } catch {
      continue;
    }
    if (msg.reason === "compiler-artifact" && msg.target?.name === "fault-proxy" && msg.executable) {
      faultProxyPath = msg.executable;
      return faultProxyPath;
    }
  }
  throw new Error("cargo reported no fault-proxy executable");
}

/**
 * One connection as the proxy reports it; the `…AtMs` values are Unix-epoch
 * milliseconds (compare with `Date.now()` or a page's
 * `performance.timeOrigin + performance.now()`), `null` when not yet.
 * @typedef {{ id: number, path: string | null, fault: string, acceptedAtMs: number,
 *   firstSwallowedToTargetAtMs: number | null, firstSwallowedToClientAtMs: number | null,
 *   bytesToTarget: number, bytesToClient: number, closed: boolean }} ProxyConn
 */

/**
 * Starts the testkit's fault-injecting TCP proxy (crates/testkit,
 * `src/bin/fault-proxy.rs`) on 127.0.0.1 in front of a loopback server and
 * returns a handle whose methods await the proxy's one-line answer.
 *
 * Faults: `"pass"`, `"delay:<ms>"`, `"stall"`, `"blackhole"`, `"drop"`,
 * `"reset"`, `"refuse"`; scopes: `"existing"`, `"new"`, `"all"`.
 *
 * @param {string} targetUrl e.g. `http://127.0.0.1:41234` (loopback only)
 * @param {object} [options]
 * @param {string} [options.binary] default `faultProxyBinary()`
 * @param {number} [options.timeoutMs=30000] for the ready line
 * @param {number} [options.replyTimeoutMs=5000] for each command's answer
 * @param {boolean} [options.echo] copy the proxy's stderr to this process's
 *   (default: when AUDIN_TEST_VERBOSE=1)
 * @returns {Promise<{ url: string,
 *   set: (fault: string, scope?: string) => Promise<void>,
 *   setFor: (pathPrefix: string, fault: string, scope?: string) => Promise<void>,
 *   conns: (pathPrefix: string) => Promise<ProxyConn[]>,
 *   connsAll: (pathPrefix?: string) => Promise<ProxyConn[]>,
 *   accepted: () => Promise<number>,
 *   close: () => Promise<number | null> }>} `conns` lists the open
 *   connections, `connsAll` every one seen (closed ones too); `close()` ends
 *   the proxy (every connection dropped) and resolves to its exit code.
 */
export async function startFaultProxy(
  targetUrl,
  { binary, timeoutMs = 30_000, replyTimeoutMs = 5_000, echo = process.env.AUDIN_TEST_VERBOSE === "1" } = {},
) {
  const target = new URL(targetUrl);
  const exe = binary ?? faultProxyBinary();
  const child = spawn(exe, ["--target", target.host], { stdio: ["pipe", "pipe", "pipe"] });
  const stderrLines = [];
  createInterface({ input: child.stderr }).on("line", (l) => {
    stderrLines.push(l);
    if (echo) process.stderr.write(`[fault-proxy:err] ${l}\n`);
  });
  const exited = new Promise((ok) => child.once("exit", (code, signal) => ok(code ?? signal)));
  /** @type {{ resolve: (line: string) => void, reject: (e: Error) => void }[]} */
  const waiting = [];
  let readyLine;
  let onReady;
  const ready = new Promise((ok, fail) => {
    const timer = setTimeout(() => fail(new Error(`fault-proxy: no ready line within ${timeoutMs} ms`)), timeoutMs);
    onReady = (v) => {
      clearTimeout(timer);
      ok(v);
    };
    child.once("error", (e) => {
      clearTimeout(timer);
      fail(e);
    });
    exited.then((code) => {
      clearTimeout(timer);
      fail(new Error(`fault-proxy exited (${code}) before it was ready: ${stderrLines.join("\n")}`));
    });
  });
  exited.then((code) => {
    for (const w of waiting.splice(0)) w.reject(new Error(`fault-proxy exited (${code}): ${stderrLines.join("\n")}`));
  });
  createInterface({ input: child.stdout }).on("line", (l) => {
    if (echo) process.stderr.write(`[fault-proxy] ${l}\n`);
    if (readyLine === undefined) {
      const m = /fault-proxy listening on (http:\/\/[^\s/]+)/.exec(l);
      if (m) {
        readyLine = l;
        onReady(m[1]);
      }
      return;
    }
    waiting.shift()?.resolve(l);
  });
  let url;
  try {
    url = await ready;
  } catch (e) {
    child.kill("SIGKILL");
    throw e;
  }

  /** Sends one command line and waits for its one answer line. */
  const request = (line) =>
    new Promise((resolve, reject) => {
      if (child.exitCode !== null || child.signalCode !== null) {
        reject(new Error(`fault-proxy is not running (command ${JSON.stringify(line)})`));
        return;
      }
      const timer = setTimeout(() => {
        reject(new Error(`fault-proxy: no answer to ${JSON.stringify(line)} within ${replyTimeoutMs} ms`));
      }, replyTimeoutMs);
      waiting.push({
        resolve: (answer) => {
          clearTimeout(timer);
          if (answer.startsWith("error:")) reject(new Error(`fault-proxy: ${JSON.stringify(line)}: ${answer}`));
          else resolve(answer);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
      child.stdin.write(`${line}\n`);
    });
  const word = (what, v) => {
    if (typeof v !== "string" || v === "" || /\s/.test(v)) throw new TypeError(`${what} must be one word, got ${JSON.stringify(v)}`);
    return v;
  };

  return {
    url,
    async set(fault, scope = "all") {
      await request(`set ${word("fault", fault)} ${word("scope", scope)}`);
    },
    async setFor(pathPrefix, fault, scope = "all") {
      await request(`set-for ${word("path prefix", pathPrefix)} ${word("fault", fault)} ${word("scope", scope)}`);
    },
    async conns(pathPrefix) {
      return JSON.parse(await request(`conns ${word("path prefix", pathPrefix)}`)).conns;
    },
    async connsAll(pathPrefix) {
      return JSON.parse(await request(pathPrefix === undefined ? "conns-all" : `conns-all ${word("path prefix", pathPrefix)}`)).conns;
    },
    async accepted() {
      return JSON.parse(await request("accepted")).accepted;
    },
    async close() {
      if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
      child.stdin.end();
      const timer = setTimeout(() => child.kill("SIGKILL"), 3_000);
      await exited;
      clearTimeout(timer);
      return child.exitCode;
    },
  };
}
