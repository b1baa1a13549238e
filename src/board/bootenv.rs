//! Boot-slot selection as data: which slots are bootable in which order, which
//! one (if any) is on trial, and how many trial attempts it has left. The
//! boot script decrements the trial slot's counter only; a committed slot
//! boots without counting, so a missed mark-good never strands a good slot.
//! Every change is computed here and stored by a backend in one write. Pure.

use super::ubootenv::Vars;
use super::Slot;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BootState {
    /// Bootable slots, preferred first.
    pub order: Vec<Slot>,
    /// The slot under trial, if any.
    pub trial: Option<Slot>,
    /// Trial attempts left per slot (index by `Slot::index`).
    pub left: [u32; 2],
    /// A copy of the record's anti-rollback floor (`FERRY_FLOOR`), kept
    /// beside the boot state so `ferry state recover` can restore it when
    /// both copies of the record are lost. The boot scripts ignore it.
    pub floor: Option<semver::Version>,
}

impl Default for BootState {
    fn default() -> Self {
        Self {
            order: vec![Slot::A],
            trial: None,
            left: [0, 0],
            floor: None,
        }
    }
}

impl BootState {
    /// The slot the bootloader will boot next, if any.
    pub fn next_boot(&self) -> Option<Slot> {
        self.order
            .iter()
            .copied()
            .find(|&s| self.trial != Some(s) || self.left[s.index()] > 0)
    }

    /// Remove `slot` from the boot order (before writing it, or after it failed).
    pub fn invalidate(&self, slot: Slot) -> BootState {
        let mut n = self.clone();
        n.order.retain(|&s| s != slot);
        if n.trial == Some(slot) {
            n.trial = None;
        }
        n.left[slot.index()] = 0;
        n
    }

    /// Try `slot` first for `attempts` boots; the others keep their place.
    pub fn arm_trial(&self, slot: Slot, attempts: u32) -> BootState {
        let mut n = self.clone();
        n.order.retain(|&s| s != slot);
        n.order.insert(0, slot);
        n.trial = Some(slot);
        n.left[slot.index()] = attempts;
        n
    }

    /// Make `slot` the committed default: first in order, no counter.
    pub fn commit(&self, slot: Slot) -> BootState {
        let mut n = self.clone();
        n.order.retain(|&s| s != slot);
        n.order.insert(0, slot);
        if n.trial == Some(slot) {
            n.trial = None;
        }
        n.left[slot.index()] = 0;
        n
    }

    /// Variables as the U-Boot and GRUB scripts read them.
    pub(crate) fn to_vars(&self, base: &Vars) -> Vars {
        let mut v = base.clone();
        let order: Vec<&str> = self.order.iter().map(|s| s.letter()).collect();
        v.insert("BOOT_ORDER".into(), order.join(" "));
        v.insert("BOOT_A_LEFT".into(), self.left[0].to_string());
        v.insert("BOOT_B_LEFT".into(), self.left[1].to_string());
        v.insert(
            "FERRY_TRIAL".into(),
            self.trial.map(|s| s.letter()).unwrap_or("").to_string(),
        );
        match &self.floor {
            Some(f) => v.insert("FERRY_FLOOR".into(), f.to_string()),
            None => v.remove("FERRY_FLOOR"),
        };
        v
    }

    /// Read from variables; missing ones take the defaults the boot script
    /// uses (order "A", no trial), so both sides agree on an empty env.
    pub fn from_vars(v: &Vars) -> Result<BootState, String> {
        let mut st = BootState::default();
        if let Some(o) = v.get("BOOT_ORDER") {
            let mut order = Vec::new();
            for w in o.split_whitespace() {
                let s =
                    Slot::parse(w).ok_or_else(|| format!("BOOT_ORDER has unknown slot {w:?}"))?;
                if !order.contains(&s) {
                    order.push(s);
                }
            }
            st.order = order;
        }
        for (i, k) in ["BOOT_A_LEFT", "BOOT_B_LEFT"].iter().enumerate() {
            if let Some(x) = v.get(*k) {
                st.left[i] = x
                    .trim()
                    .parse()
                    .map_err(|_| format!("{k}={x:?} is not a number"))?;
            }
        }
        st.trial = match v.get("FERRY_TRIAL").map(|s| s.trim()) {
            None | Some("") => None,
            Some(s) => {
                Some(Slot::parse(s).ok_or_else(|| format!("FERRY_TRIAL has unknown slot {s:?}"))?)
            }
        };
        st.floor = match v.get("FERRY_FLOOR").map(|s| s.trim()) {
            None | Some("") => None,
            Some(f) => Some(
                semver::Version::parse(f)
                    .map_err(|_| format!("FERRY_FLOOR={f:?} is not a version"))?,
            ),
        };
        Ok(st)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trial_counts_down_then_falls_back() {
        let st = BootState {
            order: vec![Slot::A],
            ..Default::default()
        };
        let armed = st.invalidate(Slot::B).arm_trial(Slot::B, 2);
        assert_eq!(armed.order, vec![Slot::B, Slot::A]);
        assert_eq!(armed.next_boot(), Some(Slot::B));
        let mut exhausted = armed.clone();
        exhausted.left[1] = 0;
        assert_eq!(exhausted.next_boot(), Some(Slot::A));
        let committed = armed.commit(Slot::B);
        assert_eq!(committed.trial, None);
        assert_eq!(committed.next_boot(), Some(Slot::B));
        // a committed slot with a zero counter still boots
        assert_eq!(committed.left, [0, 0]);
    }

    #[test]
    fn vars_round_trip_and_defaults() {
        let st = BootState {
            order: vec![Slot::B, Slot::A],
            trial: Some(Slot::B),
            left: [0, 3],
            floor: Some(semver::Version::new(1, 2, 0)),
        };
        let v = st.to_vars(&Vars::new());
        assert_eq!(v["BOOT_ORDER"], "B A");
        assert_eq!(BootState::from_vars(&v).unwrap(), st);
        assert_eq!(
            BootState::from_vars(&Vars::new()).unwrap(),
            BootState::default()
        );
        let mut bad = v.clone();
        bad.insert("BOOT_ORDER".into(), "A C".into());
        assert!(BootState::from_vars(&bad).is_err());
    }
}
