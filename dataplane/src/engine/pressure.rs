//! CPU pressure, for the busy-poll policy.
//!
//! A spinning worker holds a CPU. When the machine has CPUs to spare that
//! costs nothing and saves the wake-up of a sleeping worker; when other
//! tasks wait for a CPU (the hosts behind the ports, a VM's vCPU threads,
//! QEMU's I/O thread) it takes CPU from the traffic's own endpoints, and
//! the switch spends its time waiting for frames that the tasks it starves
//! would have sent. On a 2-CPU machine with a TCG guest, a spinning worker
//! cut the guest's TCP throughput through a vhost-user port to half of what
//! a worker that slept got (README "Threads and latency").
//!
//! The gate reads Linux's pressure stall information (PSI,
//! `Documentation/accounting/psi.rst`): `/proc/pressure/cpu`'s `some` line
//! has `total=`, the microseconds in which at least one task was runnable
//! but waiting for a CPU. While the worker spins, the gate samples it every
//! [`SAMPLE_NS`]; a window with more than [`STALL_PERMILLE`]‰ of stall
//! means someone waited, and the worker stops spinning (sleeps in epoll
//! between frames) for a back-off that doubles while the pressure lasts
//! ([`BACKOFF_MIN_NS`] to [`BACKOFF_MAX_NS`]), then tries spinning again
//! on a fresh sample. Without PSI (an old kernel, `psi=0`) the gate is
//! open: the worker spins as configured. `vswitchd --latency` (spin
//! always) does not use it.

use std::fs::File;
use std::os::unix::fs::FileExt;

/// Length of one sample window while spinning.
pub(crate) const SAMPLE_NS: u64 = 2_000_000;
/// Stall share of a window above which the worker stops spinning (‰).
pub(crate) const STALL_PERMILLE: u64 = 50;
/// First back-off, and the most it doubles to.
pub(crate) const BACKOFF_MIN_NS: u64 = 20_000_000;
pub(crate) const BACKOFF_MAX_NS: u64 = 640_000_000;

/// The decision, without the file: fed the PSI total when it asks for it.
#[derive(Debug, Default)]
pub(crate) struct Gate {
    /// (when, total µs) of the window's start.
    base: Option<(u64, u64)>,
    /// No spinning before this.
    quiet_until: u64,
    /// The next back-off.
    backoff: u64,
}

impl Gate {
    /// Whether the worker should not spin at `now` (ns). `total` reads the
    /// PSI total (µs); it is called at most once a sample window. Returns
    /// (hold off, a back-off started now).
    pub(crate) fn step(&mut self, now: u64, total: impl FnOnce() -> Option<u64>) -> (bool, bool) {
        if now < self.quiet_until {
            return (true, false);
        }
        if let Some((t0, _)) = self.base {
            if now.saturating_sub(t0) < SAMPLE_NS {
                return (false, false);
            }
        }
        let Some(us) = total() else {
            return (false, false);
        };
        // A window of any length is judged by its stall rate: a worker
        // that did not get a CPU for a while is the pressure case itself.
        let Some((t0, us0)) = self.base.replace((now, us)) else {
            return (false, false);
        };
        if !stalled(us.saturating_sub(us0), now.saturating_sub(t0)) {
            self.backoff = BACKOFF_MIN_NS;
            return (false, false);
        }
        let wait = self.backoff.clamp(BACKOFF_MIN_NS, BACKOFF_MAX_NS);
        self.quiet_until = now.saturating_add(wait);
        self.backoff = wait.saturating_mul(2).min(BACKOFF_MAX_NS);
        // The next window starts after the back-off, on a fresh sample.
        self.base = None;
        (true, true)
    }
}

/// Whether `stall_us` of stall in a window of `window_ns` is over the
/// threshold.
pub(crate) fn stalled(stall_us: u64, window_ns: u64) -> bool {
    stall_us.saturating_mul(1000).saturating_mul(1000) > window_ns.saturating_mul(STALL_PERMILLE)
}

/// The `total=` of the `some` line of `/proc/pressure/cpu`'s text.
pub(crate) fn parse_some_total(text: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(text).ok()?;
    let line = text.lines().find(|l| l.starts_with("some "))?;
    let v = line
        .split_whitespace()
        .find_map(|f| f.strip_prefix("total="))?;
    v.parse().ok()
}

/// The gate over `/proc/pressure/cpu` (kept open; one `pread` a sample).
pub(crate) struct PressureGate {
    file: Option<File>,
    buf: [u8; 256],
    gate: Gate,
}

impl PressureGate {
    /// Reads `/proc/pressure/cpu` if this kernel has it; else always open.
    pub(crate) fn open() -> PressureGate {
        let mut g = PressureGate::off();
        g.file = File::open("/proc/pressure/cpu")
            .ok()
            .filter(|f| read_total(f, &mut g.buf).is_some());
        g
    }

    /// A gate that never holds off (spin as configured).
    pub(crate) fn off() -> PressureGate {
        PressureGate {
            file: None,
            buf: [0; 256],
            gate: Gate::default(),
        }
    }

    /// See [`Gate::step`].
    pub(crate) fn holds_off(&mut self, now: u64) -> (bool, bool) {
        let PressureGate { file, buf, gate } = self;
        match file {
            Some(f) => gate.step(now, || read_total(f, buf)),
            None => (false, false),
        }
    }
}

fn read_total(f: &File, buf: &mut [u8]) -> Option<u64> {
    let n = f.read_at(buf, 0).ok()?;
    parse_some_total(&buf[..n])
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn parses_the_kernel_format() {
        let t = b"some avg10=4.82 avg60=12.91 avg300=39.15 total=6228727408\n\
                  full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n";
        assert_eq!(parse_some_total(t), Some(6_228_727_408));
        assert_eq!(parse_some_total(b"full avg10=0 total=5\n"), None);
        assert_eq!(parse_some_total(b"some total=x\n"), None);
        assert_eq!(parse_some_total(&[0xff, 0xfe]), None);
    }

    #[test]
    fn threshold() {
        // 2 ms windows: 100 µs is 5 % (not over), 101 µs is.
        assert!(!stalled(100, 2 * MS));
        assert!(stalled(101, 2 * MS));
        assert!(!stalled(0, 0));
        assert!(stalled(u64::MAX, 2 * MS));
    }

    /// Drives a gate with a PSI total that grows `stall_per_ms` µs per ms.
    fn run(g: &mut Gate, from: u64, to: u64, stall_per_ms: u64) -> (u64, u64) {
        let (mut held, mut backoffs) = (0, 0);
        let mut t = from;
        while t < to {
            let (h, b) = g.step(t, || Some(t / 1000 * stall_per_ms / 1000));
            held += h as u64;
            backoffs += b as u64;
            t += 100_000; // a turn every 100 µs
        }
        (held, backoffs)
    }

    #[test]
    fn no_pressure_spins() {
        let mut g = Gate::default();
        assert_eq!(run(&mut g, 0, 100 * MS, 0), (0, 0));
        let mut g = Gate::default();
        assert_eq!(run(&mut g, 0, 100 * MS, 40), (0, 0), "4 % is below");
    }

    #[test]
    fn pressure_backs_off_and_doubles_then_recovers() {
        let mut g = Gate::default();
        // Half of every ms someone waits: after one window the gate holds
        // off for 20 ms, probes again, holds 40 ms, then 80 ms...
        let (held, backoffs) = run(&mut g, 0, 300 * MS, 500);
        assert!(backoffs >= 3, "{backoffs}");
        assert!(held > 2500, "held {held} of 3000 turns");
        assert!(g.backoff > 2 * BACKOFF_MIN_NS);
        // Pressure gone: spinning resumes after the current back-off, and
        // the next back-off starts from the minimum again.
        let quiet = g.quiet_until;
        let (held2, backoffs2) = run(&mut g, 300 * MS, quiet + 100 * MS, 0);
        assert_eq!(backoffs2, 0);
        assert_eq!(held2, (quiet - 300 * MS).div_ceil(100_000));
        assert_eq!(g.backoff, BACKOFF_MIN_NS);
    }

    #[test]
    fn backoff_is_bounded_and_long_windows_are_judged_by_rate() {
        let mut g = Gate::default();
        run(&mut g, 0, 10_000 * MS, 900);
        assert_eq!(g.backoff, BACKOFF_MAX_NS);
        assert!(g.quiet_until <= 10_000 * MS + BACKOFF_MAX_NS);
        // A baseline, then 50 ms without a turn (the worker got no CPU):
        // 40 ms of stall in it is pressure.
        let mut g = Gate::default();
        assert_eq!(g.step(0, || Some(0)), (false, false));
        assert_eq!(g.step(50 * MS, || Some(40_000)), (true, true));
        // 1 ms of stall in 50 ms (2 %) is not.
        let mut g = Gate::default();
        assert_eq!(g.step(0, || Some(0)), (false, false));
        assert_eq!(g.step(50 * MS, || Some(1_000)), (false, false));
        // A missing reading holds nothing.
        assert_eq!(g.step(60 * MS, || None), (false, false));
    }
}
