//! Shared by the criterion benches and the load tool: the repo's ConfigMaps, and synthetic
//! profile sets of a given size that look like a big ODH installation.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use singleuser_profiles::catalog::{self, Catalog, ConfigMapSource, ProfileSelector};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The repo's `profiles/` and `templates/` ConfigMaps.
pub fn repo_configmaps() -> Vec<ConfigMapSource> {
    let root = repo();
    catalog::load_paths(&[root.join("profiles"), root.join("templates")]).expect("repo ConfigMaps load")
}

/// The body of one synthetic profile, `i` picking its kind. None of them applies to the users
/// the benches ask for (`alice`, `user-N`), except every 100th, which applies to everyone (an
/// admin's site-wide env), so resolution scans the whole list and folds a few.
fn extra_profile(i: usize) -> String {
    match i % 4 {
        _ if i % 100 == 99 => {
            format!("- name: site-wide-{i}\n  env:\n  - name: SITE_{i}\n    value: \"{i}\"\n")
        }
        0 => format!(
            "- name: team-{i}\n  slug: team-{i}\n  users: [owner-{i}, deputy-{i}]\n  env:\n  - name: TEAM\n    value: team-{i}\n  resources:\n    requests: {{cpu: \"1\", memory: 2Gi}}\n"
        ),
        1 => format!(
            "- name: image-{i}\n  images: [\"custom-{i}-notebook:*\", \"quay.io/org/special-{i}:1.0\"]\n  env:\n    IMAGE_KIND: custom-{i}\n"
        ),
        2 => format!(
            "- name: group-{i}\n  slug: group-{i}\n  groups: [group-{i}]\n  node_tolerations:\n  - {{key: gpu-{i}, operator: Exists, effect: NoSchedule}}\n"
        ),
        _ => format!(
            "- name: gpu-{i}\n  users: [gpu-user-{i}]\n  gpu: 1\n  resources:\n    limits: {{cpu: \"4\", memory: 16Gi}}\n"
        ),
    }
}

/// A labelled profile ConfigMap holding `count` synthetic profiles, as a manifest.
pub fn extra_profiles_manifest(count: usize) -> String {
    let mut doc = String::from("profiles:\n");
    for i in 0..count {
        doc.push_str(&extra_profile(i));
    }
    let indented: String = doc.lines().map(|l| format!("    {l}\n")).collect();
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: zz-bench-profiles\n  labels:\n    jupyterhub: singleuser-profiles\ndata:\n  jupyterhub-singleuser-profiles.yaml: |\n{indented}"
    )
}

/// A base profile ConfigMap with only the Ray profile (no `globals`): the 1-profile case.
pub fn ray_only(configmaps: &[ConfigMapSource]) -> Vec<ConfigMapSource> {
    let mut out = configmaps.to_vec();
    let base = out.iter_mut().find(|cm| cm.name == "jupyter-singleuser-profiles").expect("base ConfigMap");
    let text = base.data.get_mut("jupyterhub-singleuser-profiles.yaml").expect("profiles key");
    let start = text.find("- name: globals").expect("globals profile");
    let end = text.find("# A notebook with its own Ray cluster").expect("ray profile");
    text.replace_range(start..end, "");
    out
}

/// The repo's ConfigMaps with `total` profiles in all: the 2 of the repo (globals and ray) plus
/// `total - 2` synthetic ones; `total == 1` is the Ray profile alone.
pub fn configmaps_with_profiles(total: usize) -> Vec<ConfigMapSource> {
    let repo = repo_configmaps();
    if total <= 1 {
        return ray_only(&repo);
    }
    let mut out = repo;
    if total > 2 {
        out.extend(
            catalog::parse_configmaps("bench", &extra_profiles_manifest(total - 2)).expect("synthetic"),
        );
    }
    out
}

pub fn catalog_with_profiles(total: usize) -> Catalog {
    let catalog = Catalog::build(&ProfileSelector::default(), &configmaps_with_profiles(total), None);
    assert!(catalog.problems().is_empty(), "{:?}", catalog.problems());
    assert_eq!(catalog.profiles().profiles().len(), total);
    catalog
}

/// Writes a profiles folder with the repo's profiles plus `total - 2` synthetic ones.
pub fn write_profiles_dir(dir: &Path, total: usize) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::copy(
        repo().join("profiles/jupyter-singleuser-profiles.yaml"),
        dir.join("jupyter-singleuser-profiles.yaml"),
    )
    .unwrap();
    std::fs::write(dir.join("zz-bench-profiles.yaml"), extra_profiles_manifest(total.saturating_sub(2)))
        .unwrap();
}
