//! Raspberry Pi firmware A/B: `autoboot.txt` on the first FAT partition.
//! `[all] boot_partition=N` is the committed slot; `[tryboot] boot_partition=M`
//! is used once after `reboot '0 tryboot'`, so a trial that never commits
//! falls back on the next power cycle without any counter. Pure codec.

use super::bootenv::BootState;
use super::Slot;

/// Render autoboot.txt for a state; `part` maps a slot to its boot partition number.
pub(crate) fn encode(st: &BootState, part: impl Fn(Slot) -> usize) -> String {
    let committed = st
        .order
        .iter()
        .copied()
        .find(|&s| st.trial != Some(s))
        .unwrap_or(Slot::A);
    let trial = st
        .trial
        .filter(|&s| st.left[s.index()] > 0)
        .unwrap_or(committed);
    format!(
        "# written by ferry: [all] is the committed slot, [tryboot] the trial slot\n[all]\ntryboot_a_b=1\nboot_partition={}\n[tryboot]\nboot_partition={}\n",
        part(committed),
        part(trial)
    )
}

/// Parse autoboot.txt back; `slot` maps a partition number to a slot.
pub fn decode(text: &str, slot: impl Fn(usize) -> Option<Slot>) -> Result<BootState, String> {
    let mut section = "all";
    let (mut all, mut tryb) = (None, None);
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line.trim_matches(|c| c == '[' || c == ']');
        } else if let Some(v) = line.strip_prefix("boot_partition=") {
            let n: usize = v
                .trim()
                .parse()
                .map_err(|_| format!("boot_partition={v:?} is not a number"))?;
            let s = slot(n)
                .ok_or_else(|| format!("boot_partition={n} is not a slot's boot partition"))?;
            match section {
                "all" => all = Some(s),
                "tryboot" => tryb = Some(s),
                _ => {}
            }
        }
    }
    let committed = all.ok_or("autoboot.txt has no [all] boot_partition")?;
    let mut st = BootState {
        order: vec![committed],
        trial: None,
        left: [0, 0],
        floor: None,
    };
    if let Some(t) = tryb.filter(|&t| t != committed) {
        st.order.insert(0, t);
        st.trial = Some(t);
        st.left[t.index()] = 1;
    }
    Ok(st)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(s: Slot) -> usize {
        s.index() + 2
    }
    fn slot(n: usize) -> Option<Slot> {
        [Slot::A, Slot::B].into_iter().find(|s| part(*s) == n)
    }

    #[test]
    fn committed_and_trial_round_trip() {
        let st = BootState::default();
        let txt = encode(&st, part);
        assert!(txt.contains("[all]\ntryboot_a_b=1\nboot_partition=2"));
        assert_eq!(decode(&txt, slot).unwrap(), st);
        let armed = st.arm_trial(Slot::B, 3);
        let txt = encode(&armed, part);
        assert!(txt.ends_with("[tryboot]\nboot_partition=3\n"));
        let back = decode(&txt, slot).unwrap();
        assert_eq!(back.trial, Some(Slot::B));
        assert_eq!(back.order, vec![Slot::B, Slot::A]);
        let committed = decode(&encode(&back.commit(Slot::B), part), slot).unwrap();
        assert_eq!((committed.order[0], committed.trial), (Slot::B, None));
        assert!(decode("[all]\nboot_partition=9\n", slot).is_err());
    }
}
