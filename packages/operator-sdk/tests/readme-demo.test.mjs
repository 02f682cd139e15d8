// The README's "The demo" section, followed verbatim by a newcomer: start
// the dev server as `cargo xtask demo` does, open the page at the README's
// address, press the buttons the README names, run the README's exact
// `sim call` command line and accept the call it rings. Everything the
// newcomer reads is parsed out of README.md (and the demo URL out of xtask),
// so these tests break when the README stops matching what happens.
//
// Also: a README call to a number the page is not online on says why it does
// not ring (in the page's log and in the CLI's output), the Dial field's
// example is a real value, and the seed's workflow (the page served from
// another origin, a pasted token URL) still rings. Needs `npm run build` and
// a built audin-server.

import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { after, afterEach, before, beforeEach, describe, test } from "node:test";
import { promisify } from "node:util";

import { REPO_ROOT, browserSkipReason, collectConsole, launchBrowser, startAudinServer, startStaticServer } from "./harness/index.mjs";
import { serverBinary, simState, waitFor } from "./sdk-support.mjs";

const run = promisify(execFile);

/** What a newcomer reads in README.md's "The demo" section. */
function readmeDemo() {
  const md = readFileSync(join(REPO_ROOT, "README.md"), "utf8");
  const start = md.indexOf("\n## The demo\n");
  assert.ok(start >= 0, "README.md has no '## The demo' section");
  const next = md.indexOf("\n## ", start + 1);
  const section = md.slice(start, next < 0 ? undefined : next);

  const pageUrl = /`(https?:\/\/[^`\s]+\/operator-demo\.html)`/.exec(section)?.[1];
  assert.ok(pageUrl, "the demo section names no operator-demo.html URL");

  const block = /```bash\n([\s\S]*?)```/.exec(section);
  assert.ok(block, "the demo section has no bash block");
  const commandLine = block[1].replace(/\\\n/g, " ").trim();
  // The command is split on blanks below: quoting would make that a lie.
  assert.doesNotMatch(commandLine, /['"`$\n]/, `the README's command is no longer one plain line: ${commandLine}`);
  const words = commandLine.split(/\s+/);

  // Buttons: the bold names before the command (pressed in order), then the
  // first bold name after it (the one that answers the call).
  const bold = (text) => [...text.matchAll(/\*\*([^*]+)\*\*/g)].map((m) => m[1]);
  const before = bold(section.slice(0, block.index));
  const answer = bold(section.slice(block.index + block[0].length))[0];
  assert.ok(before.length > 0, "the demo section names no button to press before the call");
  assert.ok(answer, "the demo section names no button to answer the call");
  return { pageUrl, words, commandLine, before, answer };
}

/**
 * The arguments the README's `cargo run … -p audin-server -- <args>` gives
 * the server binary, with `--server` pointed at `base`. The README's address
 * must be the one `cargo xtask demo` serves on, which is checked here, so
 * the test may run on a free port instead of 8080.
 */
function simCallArgs(readme, base, demoOrigin) {
  const { words, commandLine } = readme;
  const dashdash = words.indexOf("--");
  assert.ok(words[0] === "cargo" && words[1] === "run" && dashdash > 0, `not a cargo run command: ${commandLine}`);
  const cargoArgs = words.slice(2, dashdash);
  const p = cargoArgs.indexOf("-p");
  assert.equal(cargoArgs[p + 1], "audin-server", `the README's command does not run audin-server: ${commandLine}`);
  const args = words.slice(dashdash + 1);
  assert.deepEqual(args.slice(0, 2), ["sim", "call"], commandLine);
  const s = args.indexOf("--server");
  assert.ok(s > 0, `the README's command has no --server: ${commandLine}`);
  assert.equal(args[s + 1], demoOrigin, "the README's --server is not where `cargo xtask demo` listens");
  const out = [...args];
  out[s + 1] = base;
  return out;
}

/** The value of `--flag` in the README's command. */
function flag(readme, name) {
  const i = readme.words.indexOf(name);
  assert.ok(i > 0, `the README's command has no ${name}`);
  return readme.words[i + 1];
}

/**
 * Where `cargo xtask demo` serves and what URL it prints: xtask's own
 * constants and the server's default --listen (the demo passes none).
 */
async function xtaskDemo() {
  const xtask = readFileSync(join(REPO_ROOT, "xtask", "src", "main.rs"), "utf8");
  const path = /const DEMO_PATH: &str = "([^"]+)"/.exec(xtask)?.[1];
  assert.ok(path, "xtask/src/main.rs has no DEMO_PATH");
  assert.match(xtask, /"run", "--release", "-p", "audin-server", "--", "--dev"\]/, "cargo xtask demo no longer runs `audin-server --dev`");
  const { stdout } = await run(serverBinary(), ["--help"]);
  const listen = /--listen <[A-Z_]+>[\s\S]*?\[default: ([^\]]+)\]/.exec(stdout)?.[1];
  assert.ok(listen, `no default --listen in audin-server --help:\n${stdout}`);
  return { origin: `http://${listen}`, path };
}

/**
 * Starts the server as `cargo xtask demo` does (`audin-server --dev` from the
 * repository root, so the page comes from its default static directory),
 * except on a free port and with a throw-away database.
 */
function startDemoServer() {
  return startAudinServer({
    binary: serverBinary(),
    args: ["--dev", "--listen", "127.0.0.1:0", "--database", ":memory:"],
    readyPattern: /audin-server listening on (http:\/\/[^\s/]+)/,
  });
}

/** Runs the README's command line against `base`: `{ code, stdout, stderr }`. */
async function runReadmeCommand(readme, base, demoOrigin) {
  try {
    const { stdout, stderr } = await run(serverBinary(), simCallArgs(readme, base, demoOrigin), { timeout: 20_000 });
    return { code: 0, stdout, stderr };
  } catch (e) {
    return { code: e.code, stdout: e.stdout ?? "", stderr: e.stderr ?? String(e) };
  }
}

describe("the README's demo, followed verbatim", { skip: browserSkipReason() }, () => {
  const readme = readmeDemo();
  let demo;
  let browser;
  let server;
  let page;
  let logs;
  const log = () => page.textContent("#log-text");
  const context = async () => `\ndemo log:\n${await log()}\nconsole:\n${logs.join("\n")}`;
  const button = (name) => page.getByRole("button", { name, exact: true });

  /** The README's page URL on the test server's origin. */
  const pageUrl = () => {
    const u = new URL(readme.pageUrl);
    assert.equal(u.origin, demo.origin, "the README's page is not where `cargo xtask demo` serves");
    assert.equal(u.pathname, demo.path, "the README's page is not the URL `cargo xtask demo` prints");
    return `${server.url}${u.pathname}`;
  };

  before(async () => {
    demo = await xtaskDemo();
    browser = await launchBrowser();
  });
  after(async () => {
    await browser?.close();
  });
  beforeEach(async () => {
    server = await startDemoServer();
    page = await browser.context.newPage();
    logs = collectConsole(page);
  });
  afterEach(async () => {
    await page?.close();
    await server?.kill();
  });

  test("the README's buttons and sim call ring the page, and the call is accepted", async () => {
    await page.goto(pageUrl());
    for (const name of readme.before) await button(name).click();
    await page.waitForSelector("#presence.online");
    await page.waitForFunction(() => /online on /.test(document.getElementById("log-text")?.textContent ?? ""));

    const to = flag(readme, "--to");
    const from = flag(readme, "--from");
    const cli = await runReadmeCommand(readme, server.url, demo.origin);
    assert.equal(cli.code, 0, `${readme.commandLine}\n${cli.stderr}`);
    const sid = cli.stdout.trim();
    assert.match(sid, /^CA\w+$/, cli.stdout);
    assert.doesNotMatch(cli.stderr, /nobody|hint/, "the CLI warned though the page is online");

    await page.waitForSelector("#accept:not([disabled])", { timeout: 10_000 }).catch(async (e) => {
      throw new Error(`the README's call did not ring the page: ${e.message}${await context()}`);
    });
    assert.match(await page.textContent("#call-box"), new RegExp(`from \\${from}`));
    assert.match(await log(), new RegExp(`incoming call ${sid} from \\${from} to \\${to}`));
    await button(readme.answer).click();
    await page.waitForSelector('#call-state[data-state="active"]');
    await waitFor(async () => (await simState(server.url, sid)).state === "answered", { what: "the sim caller to be answered" });
    await button("Hang up").click();
    await page.waitForSelector('#call-state[data-state="ended"]');

    // "Or type a simulated number in Dial": the field holds a real example.
    await button("Dial").click();
    await page.waitForSelector('#call-state[data-state="active"]');
    assert.match(await page.textContent("#call-box"), /to \+15550100001/);
    await button("Hang up").click();
    await page.waitForSelector('#call-state[data-state="ended"]');
    assert.doesNotMatch(await log(), /failed|error|unhandled|nobody online/, await context());
  });

  test("the README's call to a number the page is not online on says why nothing rings", async () => {
    const to = flag(readme, "--to");
    await page.goto(pageUrl());
    await button(readme.before[0]).click();
    await page.waitForSelector("#number:not([disabled])");
    // The newcomer: online on the other number only.
    const others = await page.$$eval(
      "#number option",
      (opts, to) => opts.filter((o) => !o.textContent.includes(to)).map((o) => o.value),
      to,
    );
    assert.ok(others.length > 0, "the dev account has no number besides the README's");
    await page.selectOption("#number", others);
    await button("Go online").click();
    await page.waitForSelector("#presence.online");
    await page.waitForFunction(() => /online on /.test(document.getElementById("log-text")?.textContent ?? ""));
    assert.match(await log(), new RegExp(`nobody online here on .*\\${to}.*rejected`), await context());

    const cli = await runReadmeCommand(readme, server.url, demo.origin);
    assert.equal(cli.code, 0, cli.stderr);
    const sid = cli.stdout.trim();
    assert.match(sid, /^CA\w+$/, cli.stdout);
    assert.match(cli.stderr, new RegExp(`nobody is online and free on \\${to}`), `no hint from the CLI:\n${cli.stderr}`);
    assert.match(cli.stderr, /hint: go online on/);
    const state = await simState(server.url, sid);
    assert.deepEqual([state.state, state.endReason], ["ended", "rejected"]);
    assert.equal(await page.textContent("#call-box"), "No call.");
  });

  test("the seed's workflow: the page from another origin with a pasted token URL rings", async () => {
    const statics = await startStaticServer();
    try {
      await page.goto(`${statics.url}/examples/operator-demo.html`);
      await page.fill("#token-url", `${server.url}/api/operator/token`);
      assert.equal(await page.inputValue("#core-url"), server.url);
      for (const name of readme.before) await button(name).click();
      await page.waitForSelector("#presence.online");
      await page.waitForFunction(() => /online on /.test(document.getElementById("log-text")?.textContent ?? ""));
      const cli = await runReadmeCommand(readme, server.url, demo.origin);
      assert.equal(cli.code, 0, cli.stderr);
      await page.waitForSelector("#accept:not([disabled])");
      await button(readme.answer).click();
      await page.waitForSelector('#call-state[data-state="active"]');
      await button("Hang up").click();
      await page.waitForSelector('#call-state[data-state="ended"]');
      assert.doesNotMatch(await log(), /failed|error|unhandled/, await context());
    } finally {
      await statics.close();
    }
  });
});
