//! Unit tests of `slot`, kept apart so the module reads as code.

use super::*;

#[test]
fn entry_names_parse() {
    assert_eq!(Entry::parse("slot-a.conf").unwrap().tries, None);
    let e = Entry::parse("slot-b+2-1.conf").unwrap();
    assert_eq!((e.slot, e.tries), (Slot::B, Some((2, 1))));
    assert_eq!(Entry::parse("slot-b+0-3.conf").unwrap().tries, Some((0, 3)));
    assert!(Entry::parse("other.conf").is_none());
}

#[test]
fn mark_good_drops_the_counter_and_passive_follows() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join(ENTRIES)).unwrap();
    let esp = DirEsp(dir.path().into());
    std::fs::write(
        dir.path().join(ENTRIES).join("slot-a.conf"),
        entry_text(Slot::A, 1, "1", "console=ttyS0"),
    )
    .unwrap();
    assert_eq!(passive_slot(&esp).unwrap(), Slot::B);
    std::fs::write(
        dir.path().join(ENTRIES).join("slot-b+1-2.conf"),
        entry_text(Slot::B, 2, "2", "console=ttyS0"),
    )
    .unwrap();
    assert_eq!(
        passive_slot(&esp).unwrap(),
        Slot::B,
        "an untried B is not good yet"
    );
    mark_good_on(&esp, Slot::B).unwrap();
    assert!(dir.path().join(ENTRIES).join("slot-b.conf").exists());
    assert_eq!(passive_slot(&esp).unwrap(), Slot::A);
}

#[test]
fn exhausting_a_trial_entry_leaves_no_tries_and_spares_good_ones() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join(ENTRIES)).unwrap();
    let esp = DirEsp(dir.path().into());
    let write = |name: &str, slot, generation| {
        std::fs::write(
            dir.path().join(ENTRIES).join(name),
            entry_text(slot, generation, "1", "console=ttyS0"),
        )
        .unwrap()
    };
    write("slot-a.conf", Slot::A, 1);
    write("slot-b+2-1.conf", Slot::B, 2);
    assert!(exhaust(&esp, Slot::B).unwrap());
    let b = entry_of(&esp, Slot::B).unwrap().unwrap();
    assert_eq!(
        (b.file.as_str(), b.tries),
        ("slot-b+0-3.conf", Some((0, 3)))
    );
    assert!(!exhaust(&esp, Slot::B).unwrap(), "nothing left to use up");
    assert!(
        !exhaust(&esp, Slot::A).unwrap(),
        "a good entry is not on trial"
    );
    assert_eq!(entry_of(&esp, Slot::A).unwrap().unwrap().tries, None);
}

#[test]
fn activate_gives_the_newest_generation_and_a_counter() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join(ENTRIES)).unwrap();
    let esp = DirEsp(dir.path().into());
    std::fs::write(
        dir.path().join(ENTRIES).join("slot-a.conf"),
        entry_text(Slot::A, 4, "1", "console=ttyS0"),
    )
    .unwrap();
    let target = Target {
        slot: Slot::B,
        cmdline: "console=ttyS0".into(),
        tries: 3,
    };
    activate(&esp, &target, "2.0").unwrap();
    let b = entry_of(&esp, Slot::B).unwrap().unwrap();
    assert_eq!(b.tries, Some((3, 0)));
    let text = esp.read(&format!("{ENTRIES}/{}", b.file)).unwrap();
    assert!(
        text.contains("version 5\n") && text.contains("herd 2.0 (USR-B)"),
        "{text}"
    );
    // No stray files: an entry is written beside and renamed.
    assert_eq!(esp.list(ENTRIES).unwrap().len(), 2);
}
