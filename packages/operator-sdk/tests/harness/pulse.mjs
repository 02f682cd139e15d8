// The echo rig: a private PulseAudio server whose null sink `spk` is
// Chromium's speaker and whose remapped monitor `mic` is Chromium's real
// microphone (no fake media devices), so what the page plays comes back as
// echo and only the browser's echo canceller can take it out. Recipe and
// pitfalls: ../shared/field-notes.md, "Echo rig".
//
//   import { audioRigMissing, startPulse, launchRigBrowser, speechClip } from "./harness/pulse.mjs";

import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { CHROMIUM_PATH } from "./index.mjs";

/** The programs the rig runs. */
export const RIG_TOOLS = ["pulseaudio", "pactl", "paplay", "espeak-ng", "sox"];

function onPath(name) {
  return spawnSync("sh", ["-c", `command -v ${name}`], { stdio: "ignore" }).status === 0;
}

/** The rig's programs that are not installed (`cargo xtask setup` installs them). */
export function audioRigMissing() {
  return RIG_TOOLS.filter((t) => !onPath(t));
}

/**
 * Why the echo rig's tests must be skipped, or `false`. Missing tools skip
 * them unless AUDIN_REQUIRE_AUDIO_RIG=1 or AUDIN_REQUIRE_SIP_TOOLS=1 (CI),
 * where the test runs and fails naming what is missing.
 */
export function audioRigSkipReason() {
  if (process.env.AUDIN_SKIP_BROWSER === "1") return "AUDIN_SKIP_BROWSER=1";
  if (!existsSync(CHROMIUM_PATH)) return `no Chromium at ${CHROMIUM_PATH} (run cargo xtask setup)`;
  const missing = audioRigMissing();
  const required = process.env.AUDIN_REQUIRE_AUDIO_RIG === "1" || process.env.AUDIN_REQUIRE_SIP_TOOLS === "1";
  if (missing.length > 0 && !required) {
    return `echo rig needs ${missing.join(", ")} (cargo xtask setup installs pulseaudio pulseaudio-utils espeak-ng sox)`;
  }
  return false;
}

function run(cmd, args, env) {
  const r = spawnSync(cmd, args, { env, encoding: "utf8", timeout: 15_000 });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(" ")} failed (${r.status ?? r.error}): ${r.stderr}`);
  return r.stdout;
}

/**
 * Starts a private PulseAudio (its own runtime dir, no other client can
 * reach it) with null sink `spk` and source `mic` (spk's monitor, remapped:
 * Chromium refuses a monitor source), both the defaults.
 * @returns {{ env: Record<string, string>, dir: string,
 *   play: (wav: string) => import("node:child_process").ChildProcess, stop: () => void }}
 */
export function startPulse() {
  const missing = audioRigMissing();
  if (missing.length > 0) throw new Error(`the echo rig needs ${missing.join(", ")}: run cargo xtask setup`);
  const dir = mkdtempSync(join(tmpdir(), "audin-pulse-"));
  const runDir = join(dir, "run");
  mkdirSync(join(runDir, "pulse"), { recursive: true, mode: 0o700 });
  mkdirSync(join(dir, "home"), { recursive: true });
  const daemonEnv = {
    ...process.env,
    XDG_RUNTIME_DIR: runDir,
    PULSE_RUNTIME_PATH: join(runDir, "pulse"),
    HOME: join(dir, "home"),
  };
  const socket = join(runDir, "pulse", "native");
  const env = { ...daemonEnv, PULSE_SERVER: `unix:${socket}` };
  const stop = () => {
    spawnSync("pulseaudio", ["-k"], { env: daemonEnv, stdio: "ignore", timeout: 5_000 });
    // A daemon that ignored -k: end it by its pid file (only ours).
    try {
      const pid = Number(readFileSync(join(runDir, "pulse", "pid"), "utf8").trim());
      if (pid > 0) process.kill(pid, "SIGKILL");
    } catch {
      // gone already
    }
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    run(
      "pulseaudio",
      [
        "-D",
        "-n",
        "--exit-idle-time=-1",
        "--load=module-native-protocol-unix",
        "--load=module-null-sink sink_name=spk",
      ],
      daemonEnv,
    );
    const deadline = Date.now() + 5_000;
    while (!existsSync(socket)) {
      if (Date.now() > deadline) throw new Error(`pulseaudio: no socket at ${socket}`);
      spawnSync("sleep", ["0.05"]);
    }
    run("pactl", ["load-module", "module-remap-source", "master=spk.monitor", "source_name=mic"], env);
    run("pactl", ["set-default-sink", "spk"], env);
    run("pactl", ["set-default-source", "mic"], env);
  } catch (e) {
    stop();
    throw e;
  }
  return {
    env,
    dir,
    /** Plays a WAV into `spk` from outside the browser (a near-end voice). */
    play: (wav) => spawn("paplay", ["--device=spk", wav], { env, stdio: "ignore" }),
    stop,
  };
}

/**
 * Speech from espeak-ng, resampled by sox: `wav8k` (8 kHz mono 16-bit),
 * `mulaw` (the same as raw G.711 μ-law bytes, for the sim's `play`) and
 * `wav48k` (48 kHz, for paplay).
 * @param {string} dir
 * @param {string} name
 * @param {string} text
 * @param {string[]} [voiceArgs] e.g. `["-v", "en+f3"]`
 */
export function speechClip(dir, name, text, voiceArgs = []) {
  const raw = join(dir, `${name}-raw.wav`);
  run("espeak-ng", [...voiceArgs, "-s", "165", "-w", raw, text]);
  const wav8k = join(dir, `${name}-8k.wav`);
  const ul = join(dir, `${name}.ul`);
  const wav48k = join(dir, `${name}-48k.wav`);
  // Normalised to -3 dBFS peak: a speech level a phone line really carries.
  run("sox", [raw, "-r", "8000", "-c", "1", "-b", "16", wav8k, "norm", "-3"]);
  run("sox", [wav8k, "-t", "raw", "-e", "mu-law", "-b", "8", ul]);
  run("sox", [raw, "-r", "48000", "-c", "1", "-b", "16", wav48k, "norm", "-3"]);
  return { wav8k, wav48k, mulaw: readFileSync(ul) };
}

/**
 * Headless Chromium on the rig: real capture (no fake devices; the fake UI
 * only grants the permission), audio not muted (Playwright mutes headless
 * audio by default, which plays digital zeros), talking to the rig's server.
 * @param {{ env: Record<string, string> }} pulse
 * @param {{ args?: string[] }} [options]
 */
export async function launchRigBrowser(pulse, { args = [] } = {}) {
  const { chromium } = await import("playwright-core");
  const profile = mkdtempSync(join(tmpdir(), "audin-chromium-rig-"));
  let context;
  try {
    context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM_PATH,
      headless: true,
      ignoreDefaultArgs: ["--mute-audio"],
      env: { ...process.env, PULSE_SERVER: pulse.env.PULSE_SERVER },
      args: [
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--use-fake-ui-for-media-stream",
        "--autoplay-policy=no-user-gesture-required",
        ...args,
      ],
    });
  } catch (err) {
    rmSync(profile, { recursive: true, force: true });
    throw err;
  }
  return {
    context,
    async close() {
      try {
        await context.close();
      } finally {
        rmSync(profile, { recursive: true, force: true });
      }
    },
  };
}
