//! ARM resource ids, from event subjects, request bodies, commands and ARM's own answers.
#![no_main]

use edgevault::resource_id::{DEVICE_TYPE, ResourceId, VAULT_TYPE};
use edgevault::vault_name::VaultName;
use edgevault_fuzz::text;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(text) = text(data) else { return };
    let Ok(id) = text.parse::<ResourceId>() else { return };

    // An accepted id prints as an id that parses to itself, in text and in JSON (commands carry ids as strings).
    let printed = id.to_string();
    let again: ResourceId = printed.parse().expect("an id parses its own printed form");
    assert_eq!(again, id);
    assert_eq!(again.to_string(), printed, "printing is stable");
    let json = serde_json::to_string(&id).expect("an id serializes");
    assert_eq!(serde_json::from_str::<ResourceId>(&json).expect("an id reads its own JSON"), id);

    let _ = (id.subscription(), id.resource_group(), id.namespace(), id.resource_type(), id.resource_group_id());
    let _ = (id.is_type(DEVICE_TYPE), id.is_type(VAULT_TYPE));
    if let Some(name) = id.name() {
        assert!(printed.ends_with(name), "the name is the id's last segment");
    }
    // Any id that gets this far may be a device's, so a vault name is derived from it; `default_for` panics if the
    // name it derives breaks a rule (the proptest once found `.` as a device name doing that).
    for attempt in [0, 1, u32::MAX] {
        let derived = VaultName::default_for(&id, attempt);
        assert_eq!(derived, VaultName::default_for(&again, attempt), "the same device derives the same name");
    }
});
