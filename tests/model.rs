//! Exhaustive model check of the update engine (issue: never brick, never
//! mix). A breadth-first search with a visited set over every reachable
//! world up to a depth: both bootloader env copies, both record copies (the
//! real encoding), each slot's bytes chunk by chunk ("release X", mixed or
//! garbage), the booted slot and the boot id. The operations are the CLI's,
//! run through the real `Engine` (the same code `ferry` runs) over in-memory
//! backends that crash (power cut), or fail cleanly (ENOSPC, EIO), at every
//! durable write:
//!   install of release Y / Z / a corrupt one / a partial one, `ferry check`
//!   with health passing or failing, mark-good, mark-bad, rollback, reboot,
//!   a kernel panic of the trial, a requested reboot that never happens,
//!   one env copy torn, both env copies lost, one record copy torn.
//! The bootloader is the QEMU board's boot script (env copy choice, trial
//! counters, fall-through on a kernel that does not load).
//!
//! Invariants after every step, crashed or not:
//! - the boot the bootloader would do next ends in a slot holding exactly
//!   one release, the one the record names for that slot (never a brick:
//!   no empty boot order, no boot loop on a half-written slot);
//! - every slot the record calls installed, trial or good holds exactly the
//!   release it names (never two releases in one slot);
//! - the record always loads; the rollback floor never goes down.
//!
//! With `--features model-mutants`, `every_fix_is_needed` reverts each fix
//! in turn and requires the search to find a violation (mutation check).

use std::collections::{HashSet, VecDeque};
use std::rc::Rc;
use std::time::Instant;

use ferry::board::bootenv::BootState;
use ferry::board::Slot;
use ferry::bundle::Sha256Digest;
use ferry::error::Error;
use ferry::update::engine::{BootEnv, Engine, RecordStore, SlotWriter};
use ferry::update::machine::{Action, Event, Progress, Release, SlotStatus, State};
use ferry::update::persist::{self, Device};
use ferry::update::policy::{Candidate, SlotLayout};

const PAYLOADS: usize = 2;
const CHUNKS: usize = 1;
const ATTEMPTS: u32 = 2;

/// Releases: 1 is on slot A at the start; 2 and 3 are good updates; 4 is
/// signed but its second payload's second chunk is damaged in transit; 5
/// carries only the first target.
const RELEASES: [u8; 4] = [2, 3, 4, 5];
const CORRUPT: u8 = 4;
const PARTIAL: u8 = 5;

type Chunks = [[Option<u8>; CHUNKS]; PAYLOADS];

#[derive(Clone, PartialEq, Eq, Hash, Debug)]
struct World {
    /// [uboot.env, uboot.env.redund]; `None` = not a valid copy.
    env: [Option<BootState>; 2],
    /// The record copies as bytes; `Some(b"torn")` = damaged.
    rec: [Option<Vec<u8>>; 2],
    /// What each slot holds, chunk by chunk: a release id, or garbage.
    disk: [Chunks; 2],
    booted: Slot,
    boot_id: u8,
    /// Highest floor ever loaded (ghost state for the invariant).
    floor: Option<u8>,
    /// Env/record corruption events used on this path.
    damage: u8,
}

fn rel(id: u8) -> Release {
    Release {
        version: semver::Version::new(id as u64, 0, 0),
        digest: Sha256Digest::of(&[id]),
    }
}

fn candidate(id: u8) -> Candidate {
    let n = if id == PARTIAL { 1 } else { PAYLOADS };
    Candidate {
        release: rel(id),
        compatible: "model".into(),
        min_installed_version: None,
        payloads: (0..n)
            .map(|i| (format!("p{i}"), format!("t{i}"), 1))
            .collect(),
    }
}

fn layout() -> SlotLayout {
    SlotLayout {
        compatible: "model".into(),
        targets: (0..PAYLOADS)
            .map(|i| (format!("t{i}"), format!("part{i}"), 1 << 20))
            .collect(),
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Fault {
    None,
    /// Power cut at the n-th durable write (that write is torn or lost).
    Crash(u32),
    /// The n-th durable write fails cleanly (ENOSPC / EIO); the process goes on.
    Fail(u32),
}

/// The world while one command runs, shared by the three backends.
struct Sim {
    w: World,
    fault: Fault,
    writes: u32,
    crashed: bool,
}

enum W {
    Done,
    Torn,
    Failed,
}

impl Sim {
    fn write(&mut self) -> W {
        if self.crashed {
            return W::Failed;
        }
        let n = self.writes;
        self.writes += 1;
        match self.fault {
            Fault::Crash(k) if k == n => {
                self.crashed = true;
                W::Torn
            }
            Fault::Fail(k) if k == n => W::Failed,
            _ => W::Done,
        }
    }
}

fn crash() -> Error {
    Error::Io {
        op: "write",
        path: "power cut".into(),
        source: std::io::Error::other("power cut"),
    }
}
fn enospc() -> Error {
    Error::Io {
        op: "write",
        path: "model".into(),
        source: std::io::Error::from_raw_os_error(28),
    }
}

type Shared = Rc<std::cell::RefCell<Sim>>;

struct Env(Shared);
struct Rec(Shared, u64);
struct Slots {
    sim: Shared,
    slot: Slot,
    id: u8,
    payloads: usize,
}

fn env_read(env: &[Option<BootState>; 2]) -> Option<BootState> {
    env[0].clone().or_else(|| env[1].clone())
}

impl BootEnv for Env {
    fn load(&mut self) -> Result<Option<BootState>, Error> {
        Ok(env_read(&self.0.borrow().w.env))
    }
    fn store(&mut self, st: &BootState) -> Result<(), Error> {
        // backup first, then the primary (as ferry and the boot script do)
        for i in [1, 0] {
            let mut s = self.0.borrow_mut();
            match s.write() {
                W::Done => s.w.env[i] = Some(st.clone()),
                W::Torn => {
                    s.w.env[i] = None;
                    return Err(crash());
                }
                W::Failed => return Err(enospc()),
            }
        }
        Ok(())
    }
    fn repair(&mut self) -> Result<bool, Error> {
        let mut s = self.0.borrow_mut();
        let good = match (&s.w.env[0], &s.w.env[1]) {
            (Some(_), None) => 0,
            (None, Some(_)) => 1,
            _ => return Ok(false),
        };
        match s.write() {
            W::Done => {
                s.w.env[1 - good] = s.w.env[good].clone();
                Ok(true)
            }
            W::Torn => Err(crash()),
            W::Failed => Err(enospc()),
        }
    }
}

fn load_record(rec: &[Option<Vec<u8>>; 2]) -> Result<Option<persist::Loaded>, String> {
    persist::pick([rec[0].as_deref(), rec[1].as_deref()])
}

impl RecordStore for Rec {
    fn load(&mut self) -> Result<Option<Device>, Error> {
        match load_record(&self.0.borrow().w.rec) {
            Ok(Some(l)) => {
                self.1 = l.generation;
                Ok(Some(l.device))
            }
            Ok(None) => Ok(None),
            Err(e) => Err(Error::State(e)),
        }
    }
    fn save(&mut self, d: &Device) -> Result<(), Error> {
        let g = self.1 + 1;
        let bytes = d.encode_copy(g);
        for i in persist::write_order(g) {
            let mut s = self.0.borrow_mut();
            match s.write() {
                W::Done => s.w.rec[i] = Some(bytes.clone()),
                // tmp + rename: a cut leaves the old copy whole
                W::Torn => return Err(crash()),
                W::Failed => return Err(enospc()),
            }
        }
        self.1 = g;
        Ok(())
    }
}

impl Slots {
    fn check(&self, p: usize) -> Result<(), Error> {
        let s = self.sim.borrow();
        if s.w.disk[self.slot.index()][p]
            .iter()
            .all(|c| *c == Some(self.id))
        {
            Ok(())
        } else {
            Err(Error::ReadBack {
                partition: format!("part{p}"),
                payload: format!("p{p}"),
            })
        }
    }
}

impl SlotWriter for Slots {
    fn write(
        &mut self,
        from: Progress,
        durable: &mut dyn FnMut(Progress) -> Result<(), Error>,
    ) -> Result<(), Error> {
        for p in from.payload..self.payloads {
            let start = if p == from.payload { from.chunk } else { 0 };
            for c in start..CHUNKS {
                if self.id == CORRUPT && p == 1 && c == 1 {
                    // the chunk digest check refuses it before a byte is written
                    return Err(Error::Bundle(ferry::error::BundleError::ChunkDigest {
                        payload: format!("p{p}"),
                        chunk: c,
                    }));
                }
                {
                    let mut s = self.sim.borrow_mut();
                    match s.write() {
                        W::Done => s.w.disk[self.slot.index()][p][c] = Some(self.id),
                        W::Torn => {
                            s.w.disk[self.slot.index()][p][c] = None;
                            return Err(crash());
                        }
                        W::Failed => {
                            return Err(Error::Io {
                                op: "write",
                                path: "model".into(),
                                source: std::io::Error::from_raw_os_error(5),
                            })
                        }
                    }
                }
                if c + 1 < CHUNKS {
                    durable(Progress {
                        payload: p,
                        chunk: c + 1,
                    })?;
                }
            }
            // read back (a resumed payload from its start) against the digest
            self.check(p)?;
            durable(Progress {
                payload: p + 1,
                chunk: 0,
            })?;
        }
        Ok(())
    }
    fn verify(&mut self, index: usize) -> Result<(), Error> {
        self.check(index)
    }
}

#[derive(Clone, Copy, Debug)]
enum Cmd {
    Install(u8),
    CheckPass,
    CheckFail,
    MarkGood,
    MarkBad,
    Rollback,
}

#[derive(Clone, Debug)]
#[allow(dead_code)] // the fields are read through Debug, in the reported sequence
enum Op {
    /// A command, with the fault injected, and whether a reboot it asks
    /// for (or the power cut) happens.
    Run(Cmd, Fault, bool),
    Reboot,
    KernelPanic,
    TearEnv(usize),
    LoseEnv,
    TearRecord(usize),
}

/// The slot's content, if it is exactly one release.
fn single(c: &Chunks) -> Option<u8> {
    let first = c[0][0]?;
    c.iter()
        .flatten()
        .all(|x| *x == Some(first))
        .then_some(first)
}

/// The QEMU board's boot script, from power-on to a running kernel (or a
/// brick). Writes the trial counter as the script does.
fn boot(w: &mut World, panic_first: bool) -> Result<Slot, String> {
    let mut panic_next = panic_first;
    for _ in 0..8 {
        let mut st = env_read(&w.env).unwrap_or(BootState {
            order: vec![Slot::A],
            ..BootState::default()
        });
        let mut booted = None;
        for s in st.order.clone() {
            if st.trial == Some(s) {
                if st.left[s.index()] == 0 {
                    continue;
                }
                st.left[s.index()] -= 1;
                w.env = [Some(st.clone()), Some(st.clone())];
            }
            let c = &w.disk[s.index()];
            // the kernel payload must load; otherwise the script tries the next slot
            let kernel = c[0][0].is_some() && c[0].iter().all(|x| *x == c[0][0]);
            if !kernel {
                continue;
            }
            booted = Some(s);
            break;
        }
        let Some(s) = booted else {
            return Err(format!("no bootable slot: env {:?}", w.env));
        };
        if single(&w.disk[s.index()]).is_none() || panic_next {
            // kernel panic before userspace: the board resets
            panic_next = false;
            continue;
        }
        w.booted = s;
        let used: Vec<Option<String>> = w
            .rec
            .iter()
            .map(|r| {
                r.as_deref()
                    .and_then(|b| Device::decode_copy(b).ok())
                    .and_then(|(_, d)| d.boot_id)
            })
            .collect();
        w.boot_id = (0..4u8)
            .find(|i| *i != w.boot_id && !used.contains(&Some(format!("b{i}"))))
            .unwrap_or(0);
        return Ok(s);
    }
    Err(format!(
        "boot loop: the bootloader keeps booting a slot that never reaches userspace: env {:?}, disk {:?}",
        w.env, w.disk
    ))
}

fn run_cmd(w: &World, cmd: Cmd, fault: Fault) -> (World, bool, bool, u32) {
    let sim: Shared = Rc::new(std::cell::RefCell::new(Sim {
        w: w.clone(),
        fault,
        writes: 0,
        crashed: false,
    }));
    let mut reboot = false;
    let opened = Engine::open(
        Env(sim.clone()),
        Rec(sim.clone(), 0),
        w.booted,
        Some(format!("b{}", w.boot_id)),
        ATTEMPTS,
    );
    if let Ok(mut e) = opened {
        let target = e.booted.other();
        let r = match cmd {
            Cmd::Install(id) => {
                let mut sw = Slots {
                    sim: sim.clone(),
                    slot: target,
                    id,
                    payloads: candidate(id).payloads.len(),
                };
                e.install(&candidate(id), &layout(), &mut sw)
                    .map(|_| vec![])
            }
            Cmd::CheckPass | Cmd::CheckFail => match e.dev.state {
                State::Trial { .. } => e.apply(if matches!(cmd, Cmd::CheckPass) {
                    Event::HealthPassed
                } else {
                    Event::HealthFailed {
                        reason: "k3s not ready".into(),
                    }
                }),
                _ => Ok(vec![]),
            },
            Cmd::MarkGood => e.apply(Event::MarkGood),
            Cmd::MarkBad => e.apply(Event::MarkBad),
            Cmd::Rollback => e.apply(Event::Rollback),
        };
        reboot = r.is_ok_and(|a| a.contains(&Action::Reboot));
    }
    let s = Rc::try_unwrap(sim).ok().expect("one owner").into_inner();
    (s.w, s.crashed, reboot, s.writes)
}

fn check(w: &World) -> Result<Option<u8>, String> {
    let loaded = match load_record(&w.rec) {
        Ok(Some(l)) => l.device,
        Ok(None) => return Err("the record vanished".into()),
        Err(e) => return Err(format!("the record does not load: {e}")),
    };
    // the floor the device uses: the record's, or the copy kept in the env
    // when that is higher (`Engine::open`)
    let env_floor = env_read(&w.env).and_then(|e| e.floor);
    let floor = loaded.floor.clone().max(env_floor).map(|v| v.major as u8);
    if floor < w.floor {
        return Err(format!(
            "the rollback floor went down from {:?} to {floor:?}",
            w.floor
        ));
    }
    for s in [Slot::A, Slot::B] {
        let info = &loaded.slots[s.index()];
        if matches!(
            info.status,
            SlotStatus::Installed | SlotStatus::Trial | SlotStatus::Good
        ) {
            let named = info.release.as_ref().map(|r| r.version.major as u8);
            if named.is_none() || single(&w.disk[s.index()]) != named {
                return Err(format!(
                    "slot {s} is recorded {} with release {named:?} but holds {:?}",
                    info.status.as_str(),
                    w.disk[s.index()]
                ));
            }
        }
    }
    if w.env.iter().all(Option::is_none) {
        // the boot script's default applies until ferry rebuilds the env
        // (the next command does, see `Engine::open`)
        return Ok(floor.max(w.floor));
    }
    // every slot the boot script may start holds one release the record names
    let st = env_read(&w.env).unwrap_or_default();
    for s in st.order.iter().copied() {
        if st.trial == Some(s) && st.left[s.index()] == 0 {
            continue;
        }
        let holds = single(&w.disk[s.index()]);
        let info = &loaded.slots[s.index()];
        let named = info.release.as_ref().map(|r| r.version.major as u8);
        if holds.is_none()
            || holds != named
            || matches!(info.status, SlotStatus::Bad | SlotStatus::Empty)
        {
            return Err(format!(
                "slot {s} is in the boot order ({st:?}) but holds {:?} while the record says {} {named:?}",
                w.disk[s.index()],
                info.status.as_str()
            ));
        }
    }
    let mut next = w.clone();
    boot(&mut next, false)?;
    Ok(floor.max(w.floor))
}

/// What the future of a world depends on: the records without their
/// free-text outcome, which copy is newer rather than generation numbers,
/// whether this boot was already recorded rather than boot ids.
#[derive(PartialEq, Eq, Hash)]
struct Key {
    env: [Option<BootState>; 2],
    rec: [Option<Option<Device>>; 2],
    newer: std::cmp::Ordering,
    boot_recorded: bool,
    disk: [Chunks; 2],
    booted: Slot,
    floor: Option<u8>,
    damage: u8,
}

fn key(w: &World) -> Key {
    let mut gens = [0u64; 2];
    let mut recorded = false;
    let mut rec: [Option<Option<Device>>; 2] = [None, None];
    for i in 0..2 {
        rec[i] = w.rec[i].as_deref().map(|b| {
            Device::decode_copy(b).ok().map(|(g, mut d)| {
                gens[i] = g;
                recorded |= d.boot_id == Some(format!("b{}", w.boot_id));
                d.boot_id = None;
                d.last = None;
                d.last_version = None;
                d
            })
        });
    }
    Key {
        env: w.env.clone(),
        rec,
        newer: gens[0].cmp(&gens[1]),
        boot_recorded: recorded,
        disk: w.disk,
        booted: w.booted,
        floor: w.floor,
        damage: w.damage,
    }
}

struct Path(Op, Option<Rc<Path>>);

fn describe(w: &World) -> String {
    let rec: Vec<String> = w
        .rec
        .iter()
        .map(|r| match r.as_deref().map(Device::decode_copy) {
            None => "absent".into(),
            Some(Err(e)) => format!("damaged ({e})"),
            Some(Ok((g, d))) => format!(
                "gen {g}: {} slots {:?} floor {:?}",
                d.state,
                d.slots
                    .iter()
                    .map(|s| (s.status, s.release.as_ref().map(|r| r.version.major)))
                    .collect::<Vec<_>>(),
                d.floor.map(|f| f.major)
            ),
        })
        .collect();
    format!(
        "world: booted {} env {:?} records {rec:?} disk {:?}",
        w.booted, w.env, w.disk
    )
}

fn trace(p: &Option<Rc<Path>>) -> String {
    let mut v = Vec::new();
    let mut cur = p.clone();
    while let Some(n) = cur {
        v.push(format!("{:?}", n.0));
        cur = n.1.clone();
    }
    v.reverse();
    v.join(" -> ")
}

fn initial() -> World {
    let mut dev = Device::first_boot(Slot::A);
    dev.slots[0].release = Some(rel(1));
    dev.floor = Some(rel(1).version);
    dev.boot_id = Some("b0".into());
    let env = BootState {
        order: vec![Slot::A],
        floor: dev.floor.clone(),
        ..BootState::default()
    };
    let bytes = dev.encode_copy(1);
    World {
        env: [Some(env.clone()), Some(env)],
        rec: [Some(bytes.clone()), Some(bytes)],
        disk: [[[Some(1); CHUNKS]; PAYLOADS], [[None; CHUNKS]; PAYLOADS]],
        booted: Slot::A,
        boot_id: 0,
        floor: Some(1),
        damage: 0,
    }
}

fn successors(w: &World) -> Vec<(Op, World, bool)> {
    let mut out = Vec::new();
    let cmds: Vec<Cmd> = RELEASES
        .iter()
        .map(|id| Cmd::Install(*id))
        .chain([
            Cmd::CheckPass,
            Cmd::CheckFail,
            Cmd::MarkGood,
            Cmd::MarkBad,
            Cmd::Rollback,
        ])
        .collect();
    for cmd in cmds {
        let (nw, _, reboot, writes) = run_cmd(w, cmd, Fault::None);
        out.push((Op::Run(cmd, Fault::None, false), nw.clone(), false));
        if reboot {
            let mut rb = nw;
            let r = boot(&mut rb, false);
            out.push((Op::Run(cmd, Fault::None, true), rb, r.is_err()));
        }
        for k in 0..writes {
            for fault in [Fault::Crash(k), Fault::Fail(k)] {
                let (nw, crashed, _, _) = run_cmd(w, cmd, fault);
                // the process died (or gave up) with the board still up ...
                out.push((Op::Run(cmd, fault, false), nw.clone(), false));
                if crashed {
                    // ... or the power went: the board boots again
                    let mut rb = nw;
                    let r = boot(&mut rb, false);
                    out.push((Op::Run(cmd, fault, true), rb, r.is_err()));
                }
            }
        }
    }
    let mut rb = w.clone();
    let r = boot(&mut rb, false);
    out.push((Op::Reboot, rb, r.is_err()));
    if let Some(st) = env_read(&w.env) {
        if st.trial.is_some() && st.next_boot() == st.trial {
            let mut rb = w.clone();
            let r = boot(&mut rb, true);
            out.push((Op::KernelPanic, rb, r.is_err()));
        }
    }
    if w.damage == 0 {
        // one fault at rest: a copy of the env or of the record goes bad
        if w.env[0].is_some() && w.env[1].is_some() {
            for i in [0, 1] {
                let mut d = w.clone();
                d.env[i] = None;
                d.damage += 1;
                out.push((Op::TearEnv(i), d, false));
            }
        }
        let idle = load_record(&w.rec)
            .ok()
            .flatten()
            .is_some_and(|l| l.device.state == State::Idle);
        // both copies lost, while both slots hold whole releases: the boot
        // script's own default (slot A) then boots something intact; losing
        // both while a slot is half-written is outside what ferry can
        // guarantee (README, fault table)
        let whole = w.disk.iter().all(|c| single(c).is_some());
        if idle && whole && w.env.iter().any(Option::is_some) {
            let mut d = w.clone();
            d.env = [None, None];
            d.damage += 1;
            out.push((Op::LoseEnv, d, false));
        }
        for i in [0, 1] {
            if w.rec[i].is_some() {
                let mut d = w.clone();
                d.rec[i] = Some(b"torn".to_vec());
                d.damage += 1;
                out.push((Op::TearRecord(i), d, false));
            }
        }
    }
    out
}

struct Report {
    states: usize,
    violation: Option<String>,
}

/// Worlds to start from: the provisioned board, and two it reaches through
/// the real engine (release 2 committed in B; release 2 on trial in B), so
/// that the bounded depth covers long sequences from each.
fn starts() -> Vec<(World, Option<Rc<Path>>)> {
    let fresh = initial();
    let mut out = vec![(fresh.clone(), None)];
    let (mut w, _, _, _) = run_cmd(&fresh, Cmd::Install(2), Fault::None);
    let mut p = Some(Rc::new(Path(
        Op::Run(Cmd::Install(2), Fault::None, false),
        None,
    )));
    boot(&mut w, false).expect("boots the new release");
    p = Some(Rc::new(Path(Op::Reboot, p)));
    out.push((w.clone(), p.clone()));
    let (w, _, _, _) = run_cmd(&w, Cmd::CheckPass, Fault::None);
    p = Some(Rc::new(Path(
        Op::Run(Cmd::CheckPass, Fault::None, false),
        p,
    )));
    out.push((w, p));
    out
}

fn explore(depth: usize) -> Report {
    let mut seen: HashSet<Key> = HashSet::new();
    let mut queue: VecDeque<(World, usize, Option<Rc<Path>>)> = VecDeque::new();
    for (w, p) in starts() {
        if let Err(why) = check(&w) {
            return Report {
                states: 0,
                violation: Some(format!("{why}\n  after: {}", trace(&p))),
            };
        }
        if seen.insert(key(&w)) {
            queue.push_back((w, 0, p));
        }
    }
    while let Some((w, d, path)) = queue.pop_front() {
        if d == depth {
            continue;
        }
        for (op, mut nw, bricked) in successors(&w) {
            let p = Some(Rc::new(Path(op, path.clone())));
            let verdict = if bricked {
                let mut b = nw.clone();
                boot(&mut b, false).map(|_| None)
            } else {
                check(&nw).map(Some)
            };
            match verdict {
                Err(why) => {
                    return Report {
                        states: seen.len(),
                        violation: Some(format!(
                            "{why}\n  after: {}\n  {}",
                            trace(&p),
                            describe(&nw)
                        )),
                    }
                }
                Ok(f) => nw.floor = f.flatten().or(nw.floor),
            }
            if seen.insert(key(&nw)) {
                queue.push_back((nw, d + 1, p));
            }
        }
    }
    Report {
        states: seen.len(),
        violation: None,
    }
}

/// Depth of the search: every sequence of this many operations (each with
/// every fault at every write) is explored. FERRY_MODEL_DEPTH overrides it.
fn depth() -> usize {
    std::env::var("FERRY_MODEL_DEPTH")
        .ok()
        .and_then(|d| d.parse().ok())
        .unwrap_or(3)
}

#[test]
fn every_reachable_state_boots_one_named_release() {
    let t = Instant::now();
    let d = depth();
    let r = explore(d);
    println!(
        "model check: depth {d}, {} states explored in {:.1} s",
        r.states,
        t.elapsed().as_secs_f64()
    );
    if let Some(v) = r.violation {
        panic!("invariant violated: {v}");
    }
    assert!(
        r.states > 1000,
        "the search reached only {} states",
        r.states
    );
}

#[cfg(feature = "model-mutants")]
#[test]
fn every_fix_is_needed() {
    use ferry::update::mutant::{set, Mutant};
    let mut results = Vec::new();
    for m in [
        Mutant::RollbackWindow,
        Mutant::StaleResume,
        Mutant::ArmingWindow,
        Mutant::EnvDefault,
        Mutant::PartialBundle,
        Mutant::SingleRecord,
    ] {
        let t = Instant::now();
        set(Some(m));
        let r = explore(depth());
        set(None);
        println!(
            "mutant {m:?}: {} after {} states, {:.1} s{}",
            if r.violation.is_some() {
                "caught"
            } else {
                "MISSED"
            },
            r.states,
            t.elapsed().as_secs_f64(),
            r.violation
                .as_ref()
                .map(|v| format!("\n  {v}"))
                .unwrap_or_default()
        );
        results.push((m, r.violation.is_some()));
    }
    let missed: Vec<_> = results
        .iter()
        .filter(|(_, caught)| !caught)
        .map(|(m, _)| format!("{m:?}"))
        .collect();
    assert!(missed.is_empty(), "mutants not caught: {missed:?}");
}
