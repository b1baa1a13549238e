//! Install policy: is this (authentic) bundle acceptable for this device now?
//! Pure: manifest and device facts in, refusal reason out.

use crate::board::{Board, Slot};
use crate::bundle::Manifest;
use crate::error::PolicyError;

pub fn check(
    m: &Manifest,
    board: &Board,
    target: Slot,
    floor: Option<&semver::Version>,
    installed: Option<&semver::Version>,
) -> Result<(), PolicyError> {
    if m.compatible != board.compatible {
        return Err(PolicyError::WrongBoard {
            bundle: m.compatible.clone(),
            device: board.compatible.clone(),
        });
    }
    if let Some(f) = floor {
        if &m.version < f {
            return Err(PolicyError::Downgrade {
                bundle: m.version.to_string(),
                floor: f.to_string(),
            });
        }
    }
    if let (Some(req), Some(cur)) = (&m.min_installed_version, installed) {
        if cur < req {
            return Err(PolicyError::TooOld {
                installed: cur.to_string(),
                required: req.to_string(),
            });
        }
    }
    for p in &m.payloads {
        let part =
            board
                .slot_partition(target, &p.target)
                .ok_or_else(|| PolicyError::MissingTarget {
                    target: p.target.clone(),
                })?;
        let capacity = part.size_mib << 20;
        if p.installed_size > capacity {
            return Err(PolicyError::TooLarge {
                payload: p.name.clone(),
                size: p.installed_size,
                partition: part.name.clone(),
                capacity,
            });
        }
    }
    Ok(())
}
