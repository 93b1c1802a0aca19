//! Whether a sender addressed exactly the recipient's devices, as Signal-Server checks it: one
//! ciphertext for each current device (the sender's own device excepted), none for devices
//! that do not exist, and none for a device that registered again since the sender learned
//! its registration id.

use serde::Serialize;
use utoipa::ToSchema;

use crate::store::DeviceKeys;

/// A device a message is addressed to, with the registration id the sender knows (if any).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WantedDevice {
    pub device_id: i64,
    pub registration_id: Option<i64>,
}

/// Why a set of messages does not fit the recipient's devices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(untagged)]
pub enum Mismatch {
    /// 409: devices without a message, and messages for devices that do not exist.
    Devices {
        missing_devices: Vec<i64>,
        extra_devices: Vec<i64>,
    },
    /// 410: devices whose registration id is not the one the sender gave.
    Stale { stale_devices: Vec<i64> },
}

/// Checks `wanted` against the recipient's `devices`; `skip` is the sender's own device when
/// it writes to its own account.
pub fn check_devices(
    devices: &[DeviceKeys],
    wanted: &[WantedDevice],
    skip: Option<i64>,
) -> Result<(), Mismatch> {
    let has = |id: i64| devices.iter().any(|d| d.device_id == id);
    let asked = |id: i64| wanted.iter().any(|w| w.device_id == id);
    let missing: Vec<i64> = devices
        .iter()
        .map(|d| d.device_id)
        .filter(|id| Some(*id) != skip && !asked(*id))
        .collect();
    let mut extra: Vec<i64> = wanted
        .iter()
        .map(|w| w.device_id)
        .filter(|id| !has(*id) || Some(*id) == skip)
        .collect();
    extra.dedup();
    if !missing.is_empty() || !extra.is_empty() {
        return Err(Mismatch::Devices {
            missing_devices: missing,
            extra_devices: extra,
        });
    }
    let stale: Vec<i64> = wanted
        .iter()
        .filter(|w| {
            let current = devices.iter().find(|d| d.device_id == w.device_id);
            matches!((w.registration_id, current), (Some(r), Some(d)) if r != d.registration_id)
        })
        .map(|w| w.device_id)
        .collect();
    if stale.is_empty() {
        Ok(())
    } else {
        Err(Mismatch::Stale {
            stale_devices: stale,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(device_id: i64, registration_id: i64) -> DeviceKeys {
        DeviceKeys {
            device_id,
            registration_id,
            signed_prekey_id: 1,
            signed_prekey: String::new(),
            prekey_signature: String::new(),
            fallback_key_id: 1,
            fallback_key: String::new(),
            fallback_signature: String::new(),
        }
    }

    fn want(device_id: i64, registration_id: Option<i64>) -> WantedDevice {
        WantedDevice {
            device_id,
            registration_id,
        }
    }

    #[test]
    fn missing_extra_and_stale_devices_are_named() {
        let devices = [device(1, 10), device(2, 20)];
        assert_eq!(
            check_devices(&devices, &[want(1, None), want(2, Some(20))], None),
            Ok(())
        );
        assert_eq!(
            check_devices(&devices, &[want(1, None), want(3, None)], None),
            Err(Mismatch::Devices {
                missing_devices: vec![2],
                extra_devices: vec![3]
            })
        );
        assert_eq!(
            check_devices(&devices, &[want(1, Some(11)), want(2, None)], None),
            Err(Mismatch::Stale {
                stale_devices: vec![1]
            })
        );
        assert_eq!(check_devices(&devices, &[want(2, None)], Some(1)), Ok(()));
    }
}
