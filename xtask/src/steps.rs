//! The step lists of `test`, `dist` and `demo`, and the runner that prints
//! a header per step and a summary at the end. To add a check, add one line
//! to the list of the command that needs it.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use crate::setup::{self, WASM_TARGET};
use crate::util::{Ctx, fmt_duration, run};
use crate::wasm;

pub type StepFn = fn(&Ctx) -> Result<()>;

#[derive(Debug, Clone, Copy)]
pub struct Step {
    pub name: &'static str,
    /// One of `setup`, `rust`, `wasm`, `npm` (selectable with --only/--skip).
    pub group: &'static str,
    pub run: StepFn,
}

impl Step {
    pub const fn new(name: &'static str, group: &'static str, run: StepFn) -> Self {
        Self { name, group, run }
    }
}

/// `cargo xtask test`: everything CI checks, in order, failing fast.
pub fn test_steps() -> Vec<Step> {
    vec![
        Step::new("setup", "setup", setup::run_all),
        Step::new("fmt", "rust", |c| {
            run(c.cargo().args(["fmt", "--all", "--", "--check"]))
        }),
        Step::new("clippy", "rust", |c| {
            run(c.cargo().args([
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]))
        }),
        Step::new("cargo-test", "rust", |c| {
            // The setup step installed baresip, SIPp, PostgreSQL and NATS:
            // the SIP far-end, PostgreSQL store and NATS cluster tests must
            // run here, never skip (they skip only on a bare `cargo test`
            // where the tools are absent).
            run(c
                .cargo()
                .args(["test", "--workspace"])
                .env("AUDIN_REQUIRE_SIP_TOOLS", "1")
                .env("AUDIN_REQUIRE_POSTGRES", "1")
                .env("AUDIN_REQUIRE_NATS", "1")
                .env("AUDIN_REQUIRE_HAPROXY", "1"))
        }),
        // The wasm crates' target-specific code (panic handler, exports) is
        // only compiled, hence only linted, for wasm32.
        Step::new("clippy-wasm", "wasm", |c| {
            run(c.cargo().args([
                "clippy",
                "-p",
                "audin-codec",
                "-p",
                "audin-operator-worklet",
                "-p",
                "audin-operator-wasm",
                "--target",
                WASM_TARGET,
                "--",
                "-D",
                "warnings",
            ]))
        }),
        Step::new("codec-wasm", "wasm", |c| {
            run(c
                .cargo()
                .args(["build", "-p", "audin-codec", "--target", WASM_TARGET]))
        }),
        Step::new("wasm", "wasm", wasm::run_all),
        Step::new("npm-build", "npm", npm_build),
        // Same rule for the browser's SIP test (tests/sip.test.mjs) and
        // echo rig (tests/echo.test.mjs): with baresip, PulseAudio,
        // espeak-ng, sox and Chromium installed by setup, a skip would hide
        // a gap.
        Step::new("npm-test", "npm", |c| {
            run(c
                .npm()
                .args(["test"])
                .env("AUDIN_REQUIRE_SIP_TOOLS", "1")
                .env("AUDIN_REQUIRE_AUDIO_RIG", "1"))
        }),
        // Bounded: every target fuzzes for FUZZ_SECONDS (default 60, as issue 7 asks) after
        // replaying the committed regression inputs.
        Step::new("fuzz", "fuzz", |c| {
            let secs = std::env::var("FUZZ_SECONDS").unwrap_or_else(|_| "60".into());
            run(std::process::Command::new("bash")
                .current_dir(&c.root)
                .arg("fuzz/run-bounded.sh")
                .arg(secs))
        }),
    ]
}

/// `cargo xtask dist`: the npm tarball in target/dist.
pub fn dist_steps() -> Vec<Step> {
    vec![
        Step::new("setup", "setup", setup::run_all),
        Step::new("wasm", "wasm", wasm::run_all),
        Step::new("npm-build", "npm", npm_build),
        Step::new("npm-pack", "npm", |c| {
            let dest = c.target_dir()?.join("dist");
            std::fs::create_dir_all(&dest)?;
            run(c.npm().args(["pack", "--pack-destination"]).arg(&dest))
        }),
    ]
}

/// `cargo xtask demo`: what is built before the server starts.
pub fn demo_build_steps() -> Vec<Step> {
    vec![
        Step::new("setup", "setup", setup::run_all),
        Step::new("wasm", "wasm", wasm::run_all),
        Step::new("npm-build", "npm", npm_build),
    ]
}

/// Setup, wasm and the npm build: what anything using `dist/` needs first.
pub fn build_sdk(c: &Ctx) -> Result<()> {
    for step in demo_build_steps() {
        (step.run)(c)?;
    }
    Ok(())
}

fn npm_build(c: &Ctx) -> Result<()> {
    run(c.npm().args(["run", "build"]))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Pending,
    Skipped,
    Ok(Duration),
    Failed(Duration),
}

#[derive(Debug)]
pub struct Plan {
    command: String,
    steps: Vec<(Step, Status)>,
    pub list_only: bool,
}

impl Plan {
    pub fn new(command: &str, steps: Vec<Step>) -> Self {
        Self {
            command: command.to_owned(),
            steps: steps.into_iter().map(|s| (s, Status::Pending)).collect(),
            list_only: false,
        }
    }

    /// Resolves a comma list of step or group names; unknown names are errors.
    fn matches(&self, list: &str) -> Result<Vec<bool>> {
        let names: Vec<&str> = list
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .collect();
        for name in &names {
            if !self
                .steps
                .iter()
                .any(|(s, _)| s.name == *name || s.group == *name)
            {
                let known: Vec<&str> = self.steps.iter().map(|(s, _)| s.name).collect();
                bail!(
                    "`{name}` is no step or group of `{}` (steps: {}; groups: setup, rust, wasm, npm, fuzz)",
                    self.command,
                    known.join(", ")
                );
            }
        }
        Ok(self
            .steps
            .iter()
            .map(|(s, _)| names.iter().any(|n| s.name == *n || s.group == *n))
            .collect())
    }

    pub fn only(&mut self, list: &str) -> Result<()> {
        let hit = self.matches(list)?;
        for ((_, status), hit) in self.steps.iter_mut().zip(hit) {
            if !hit {
                *status = Status::Skipped;
            }
        }
        Ok(())
    }

    pub fn skip(&mut self, list: &str) -> Result<()> {
        let hit = self.matches(list)?;
        for ((_, status), hit) in self.steps.iter_mut().zip(hit) {
            if hit {
                *status = Status::Skipped;
            }
        }
        Ok(())
    }

    pub fn from(&mut self, step: &str) -> Result<()> {
        let Some(start) = self.steps.iter().position(|(s, _)| s.name == step) else {
            bail!("`{step}` is no step of `{}`", self.command);
        };
        for (_, status) in &mut self.steps[..start] {
            *status = Status::Skipped;
        }
        Ok(())
    }

    pub fn run(&mut self, ctx: &Ctx) -> Result<()> {
        if self.list_only {
            for (step, status) in &self.steps {
                let mark = if *status == Status::Skipped {
                    " (skipped)"
                } else {
                    ""
                };
                println!("{:<12} {:<6}{mark}", step.name, step.group);
            }
            return Ok(());
        }
        let started = Instant::now();
        let total = self.steps.len();
        let mut failure = None;
        for (i, (step, status)) in self.steps.iter_mut().enumerate() {
            if *status == Status::Skipped {
                continue;
            }
            println!("\n==> [{}/{total}] {} ({})", i + 1, step.name, step.group);
            let t = Instant::now();
            match (step.run)(ctx) {
                Ok(()) => *status = Status::Ok(t.elapsed()),
                Err(err) => {
                    *status = Status::Failed(t.elapsed());
                    failure = Some((step.name, err));
                    break;
                }
            }
        }
        self.summary(started.elapsed(), ctx);
        match failure {
            Some((name, err)) => Err(err.context(format!("step `{name}` failed"))),
            None => Ok(()),
        }
    }

    fn summary(&self, elapsed: Duration, ctx: &Ctx) {
        println!("\n==> {} summary", self.command);
        for (step, status) in &self.steps {
            let (word, time) = match status {
                Status::Ok(d) => ("ok", fmt_duration(*d)),
                Status::Failed(d) => ("FAILED", fmt_duration(*d)),
                Status::Skipped => ("skipped", String::new()),
                Status::Pending => ("not run", String::new()),
            };
            println!("    {word:<8} {:<12} {time:>12}", step.name);
        }
        let browser = if ctx.skip_browser {
            " (browser tests skipped)"
        } else {
            ""
        };
        let failed = self
            .steps
            .iter()
            .any(|(_, s)| matches!(s, Status::Failed(_)));
        println!(
            "    {} in {}{browser}",
            if failed { "FAILED" } else { "all ok" },
            fmt_duration(elapsed)
        );
    }
}
