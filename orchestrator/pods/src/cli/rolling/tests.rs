//! Unit tests of `rolling`, kept apart so the module reads as code.

use super::*;

fn template(image: &str) -> Value {
    json!({"metadata": {"labels": {"name": "web"}}, "spec": {"containers": [{"name": "a", "image": image}]}})
}

#[test]
fn the_hash_ignores_the_deployment_label_and_follows_the_image() {
    let t = template("nginx:1");
    let mut labelled = t.clone();
    labelled["metadata"]["labels"][DEPLOYMENT_KEY] = json!("x");
    assert_eq!(template_hash(&t), template_hash(&labelled));
    assert_ne!(template_hash(&t), template_hash(&template("nginx:2")));
    assert_eq!(template_hash(&t).len(), 8);
}

#[test]
fn the_image_changes_in_the_one_container_named() {
    let t = with_image(&template("nginx:1"), "nginx:2", None).unwrap();
    assert_eq!(t["spec"]["containers"][0]["image"], "nginx:2");
    assert!(with_image(&template("nginx:1"), "nginx:1", None).is_err());
    assert!(with_image(&template("nginx:1"), "nginx:2", Some("b")).is_err());
    let two =
        json!({"spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]}});
    assert!(with_image(&two, "z", None).is_err());
    assert_eq!(
        with_image(&two, "z", Some("b")).unwrap()["spec"]["containers"][1]["image"],
        "z"
    );
}

#[test]
fn an_earlier_update_s_hash_is_not_kept_in_the_next_name() {
    assert_eq!(base_name("web-0a1b2c3d"), "web");
    assert_eq!(base_name("web-v2"), "web-v2");
    assert_eq!(base_name("redis-master"), "redis-master");
}
