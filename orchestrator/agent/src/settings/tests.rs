//! Unit tests of `settings`, kept apart so the module reads as code.

use super::*;

#[test]
fn metadata_flags_are_parsed_strictly() {
    let m = parse_metadata("role=db, zone=a").unwrap();
    assert_eq!((m["role"].as_str(), m["zone"].as_str()), ("db", "a"));
    for (bad, why) in [
        ("role", "KEY=VALUE"),
        ("role=", "value"),
        ("=db", "key"),
        ("a=1,a=2", "twice"),
        ("a=b c", "value"),
    ] {
        let e = parse_metadata(bad).unwrap_err().to_string();
        assert!(e.contains(why), "{bad}: {e}");
    }
}

#[test]
fn name_derived_machine_ids_are_stable_and_distinct() {
    assert_eq!(machine_id_for_name("m0"), machine_id_for_name("m0"));
    assert_ne!(machine_id_for_name("m0"), machine_id_for_name("m1"));
    assert_eq!(machine_id_for_name("m0").len(), 16);
    assert!(check_machine_id("bad id").is_err());
}
