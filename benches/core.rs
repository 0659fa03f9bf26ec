//! criterion benches of the per-request domain work: profile resolution (1, 100, 1,000
//! profiles), rendering the default RayCluster template, a whole plan, and JSP `return`
//! path (jsonpath-rw) evaluation. Run: `cargo bench --bench core`.

mod common;

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use serde_json::{Value, json};
use singleuser_profiles::catalog::{Catalog, ProfileSelector};
use singleuser_profiles::jsonpath_rw::JsonPath;
use singleuser_profiles::plan::{self, SpawnRequest};
use singleuser_profiles::profile::{Choice, Requester};
use singleuser_profiles::template::{self, ContextInput, Template};

fn request(user: &str) -> SpawnRequest {
    SpawnRequest {
        user: user.into(),
        profile: Some("ray".into()),
        size: Some("Small".into()),
        options: BTreeMap::from([("workers".into(), json!(3))]),
        ..SpawnRequest::default()
    }
}

fn resolution(c: &mut Criterion) {
    let mut group = c.benchmark_group("resolve");
    for total in [1, 100, 1000] {
        let catalog = common::catalog_with_profiles(total);
        let who = Requester::new("alice", ["data-science"]);
        let choice = Choice {
            profile: Some("ray".into()),
            size: Some("Small".into()),
            options: BTreeMap::from([("workers".into(), json!(3))]),
            ..Choice::default()
        };
        let image = Some("quay.io/opendatahub/ray-ml-notebook:2.9");
        catalog.profiles().resolve(&who, image, &choice).expect("resolves");
        group.throughput(Throughput::Elements(total as u64));
        group.bench_with_input(BenchmarkId::new("profiles", total), &total, |b, _| {
            b.iter(|| {
                catalog.profiles().resolve(black_box(&who), black_box(image), black_box(&choice)).unwrap()
            })
        });
    }
    group.finish();

    // Catalog build (parse + compile) for the same sizes: the cost of a ConfigMap change.
    let mut group = c.benchmark_group("catalog_build");
    group.sample_size(20);
    for total in [1, 100, 1000] {
        let cms = common::configmaps_with_profiles(total);
        group.bench_with_input(BenchmarkId::new("profiles", total), &total, |b, _| {
            b.iter(|| Catalog::build(&ProfileSelector::default(), black_box(&cms), None))
        });
    }
    group.finish();
}

fn ray_cluster_text() -> String {
    let cms = common::repo_configmaps();
    let cm = cms.iter().find(|cm| cm.name == "ray-cluster-templates").expect("template ConfigMap");
    cm.data["ray-cluster.yaml"].clone()
}

fn rendering(c: &mut Criterion) {
    let catalog = common::catalog_with_profiles(2);
    let resolved = catalog
        .profiles()
        .resolve(
            &Requester::new("alice", [] as [&str; 0]),
            None,
            &Choice { profile: Some("ray".into()), ..Choice::default() },
        )
        .unwrap();
    let service = &resolved.services["ray"];
    let input = ContextInput {
        username: "eje@redhat.com",
        server: "",
        namespace: "notebooks",
        image: "ray-ml-notebook:2.9",
        profile: "ray",
        size: "Small",
        configuration: &service.configuration,
        options: &resolved.options,
    };
    let text = ray_cluster_text();
    let compiled = Template::compile("ray-cluster-templates", "ray-cluster.yaml", &text).unwrap();
    let context = template::context(&input);
    compiled.render(&context).unwrap();

    let mut group = c.benchmark_group("template");
    group.bench_function("context", |b| b.iter(|| template::context(black_box(&input))));
    group.bench_function("render_ray_cluster", |b| b.iter(|| compiled.render(black_box(&context)).unwrap()));
    group.bench_function("compile_ray_cluster", |b| {
        b.iter(|| Template::compile("ray-cluster-templates", "ray-cluster.yaml", black_box(&text)).unwrap())
    });
    group.finish();

    // The whole pure spawn path: resolve, render both default templates, label, env.
    let mut group = c.benchmark_group("plan");
    for total in [2, 1000] {
        let catalog = common::catalog_with_profiles(total);
        let req = request("eje@redhat.com");
        group.bench_with_input(BenchmarkId::new("default_ray_profiles", total), &total, |b, _| {
            b.iter(|| {
                let plan = plan::plan(&catalog, black_box(&req), "notebooks").unwrap();
                let env = plan.environment(&plan.objects);
                (plan, env)
            })
        });
    }
    group.finish();
}

/// The repo's profiles plus a profile whose Ray service has JSP `return` entries.
fn catalog_with_returns() -> Catalog {
    let mut cms = common::repo_configmaps();
    let base = cms.iter_mut().find(|cm| cm.name == "jupyter-singleuser-profiles").unwrap();
    let text = base.data.get_mut("jupyterhub-singleuser-profiles.yaml").unwrap();
    let anchor = "      labels:\n        app.kubernetes.io/part-of: singleuser-profiles\n";
    assert!(text.contains(anchor), "anchor in the repo profile");
    *text = text.replacen(
        anchor,
        &format!(
            "{anchor}      return:\n        RAY_HEAD_SERVICE_TYPE: spec.headGroupSpec.serviceType\n        RAY_WORKERS: $.spec.workerGroupSpecs[0].replicas\n        RAY_DASHBOARD_HOST: $.spec.rules[0].host\n        RAY_HEAD_IMAGE: \"spec.headGroupSpec.template.spec.containers[*].image\"\n"
        ),
        1,
    );
    let catalog = Catalog::build(&ProfileSelector::default(), &cms, None);
    assert!(catalog.problems().is_empty(), "{:?}", catalog.problems());
    catalog
}

fn jsonpath(c: &mut Criterion) {
    let catalog = catalog_with_returns();
    let req = request("alice");
    let plan = plan::plan(&catalog, &req, "notebooks").unwrap();
    let env = plan.environment(&plan.objects);
    for name in ["RAY_HEAD_SERVICE_TYPE", "RAY_WORKERS", "RAY_DASHBOARD_HOST", "RAY_HEAD_IMAGE"] {
        assert!(env.contains_key(name), "{name} missing from {env:?}");
    }
    let ray_cluster: Value = plan.objects[0].clone();
    let path = JsonPath::parse("metadata.labels['app.kubernetes.io/name']").unwrap();

    let mut group = c.benchmark_group("jsonpath");
    group.bench_function("environment_4_returns", |b| b.iter(|| plan.environment(black_box(&plan.objects))));
    group.bench_function("find_quoted_label", |b| b.iter(|| path.find(black_box(&ray_cluster)).len()));
    group.bench_function("parse_bracket_path", |b| {
        b.iter(|| JsonPath::parse(black_box("metadata.labels[odh-ray-cluster-service]")).unwrap())
    });
    group.bench_function("plan_with_4_returns", |b| {
        b.iter(|| plan::plan(&catalog, black_box(&req), "notebooks").unwrap())
    });
    group.finish();
}

criterion_group!(benches, resolution, rendering, jsonpath);
criterion_main!(benches);
