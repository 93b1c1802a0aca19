#!/usr/bin/env node
// Offline validation of Switchboard's Kubernetes manifests, used by scripts/check-k8s.
//
//   node validate.js resources KUSTOMIZATION   print the `resources` entries, one a line
//   node validate.js check FILE...             validate every document of every FILE
//   node validate.js check -                   validate a multi-document stream on stdin
//
// Each document is matched by apiVersion/kind to a kubernetes-models class and checked with
// its validate() (the Kubernetes OpenAPI schema: types, required fields, enums, formats);
// unknown apiVersion/kind pairs fail. The schemas do not reject unknown fields, and they do
// not require a container image, so two Switchboard-specific checks are added: every
// container names an image, and every SWITCHBOARD_* name in a ConfigMap, Secret or container
// env is one the node knows (an unknown one stops the node at startup).
'use strict';
const fs = require('fs');
const yaml = require('js-yaml');

const core = require('kubernetes-models/v1');
const apps = require('kubernetes-models/apps/v1');
const networking = require('kubernetes-models/networking.k8s.io/v1');
const autoscaling = require('kubernetes-models/autoscaling/v2');
const policy = require('kubernetes-models/policy/v1');
const rbac = require('kubernetes-models/rbac.authorization.k8s.io/v1');

const MODELS = {
  'v1/ConfigMap': core.ConfigMap,
  'v1/Secret': core.Secret,
  'v1/Service': core.Service,
  'v1/ServiceAccount': core.ServiceAccount,
  'v1/Namespace': core.Namespace,
  'apps/v1/Deployment': apps.Deployment,
  'networking.k8s.io/v1/Ingress': networking.Ingress,
  'networking.k8s.io/v1/NetworkPolicy': networking.NetworkPolicy,
  'autoscaling/v2/HorizontalPodAutoscaler': autoscaling.HorizontalPodAutoscaler,
  'policy/v1/PodDisruptionBudget': policy.PodDisruptionBudget,
  'rbac.authorization.k8s.io/v1/Role': rbac.Role,
  'rbac.authorization.k8s.io/v1/RoleBinding': rbac.RoleBinding,
};

// The settings the node accepts from these manifests (any other SWITCHBOARD_* stops it).
const KNOWN_SETTINGS = new Set([
  'SWITCHBOARD_ENV', 'SWITCHBOARD_LISTEN', 'SWITCHBOARD_METRICS_LISTEN',
  'SWITCHBOARD_REDIS_URL', 'SWITCHBOARD_DATABASE_URL', 'SWITCHBOARD_JWT_SECRET',
  'SWITCHBOARD_TURN_SECRET', 'SWITCHBOARD_TURN_URIS', 'SWITCHBOARD_STUN_URIS',
  'SWITCHBOARD_CORS_ORIGINS', 'SWITCHBOARD_ALLOWED_ORIGINS', 'SWITCHBOARD_TRUSTED_PROXIES',
  'SWITCHBOARD_LOG_FORMAT', 'SWITCHBOARD_SHUTDOWN_TIMEOUT', 'SWITCHBOARD_NODE_ID',
  'SWITCHBOARD_DATA_KEY', 'SWITCHBOARD_DATA_KEY_PREVIOUS',
]);

function extraChecks(doc) {
  const problems = [];
  const checkName = (name, where) => {
    if (/^SWITCHBOARD_/.test(name) && !KNOWN_SETTINGS.has(name)) {
      problems.push(`${where}: unknown setting ${name} (the node refuses to start)`);
    }
  };
  if (doc.kind === 'ConfigMap' || doc.kind === 'Secret') {
    for (const field of ['data', 'stringData', 'binaryData']) {
      for (const key of Object.keys(doc[field] || {})) checkName(key, field);
    }
  }
  const podSpec = doc.kind === 'Deployment' ? (doc.spec && doc.spec.template && doc.spec.template.spec) : null;
  if (podSpec) {
    const containers = [...(podSpec.initContainers || []), ...(podSpec.containers || [])];
    for (const c of containers) {
      if (!c.image) problems.push(`container ${c.name}: no image`);
      for (const e of c.env || []) checkName(e.name, `container ${c.name} env`);
    }
  }
  return problems;
}

function checkStream(text, label) {
  let docs;
  try {
    docs = yaml.loadAll(text);
  } catch (e) {
    return [`${label}: YAML: ${e.message.split('\n')[0]}`];
  }
  const failures = [];
  docs.forEach((doc, i) => {
    if (doc === null || doc === undefined) return;
    const name = `${label}#${i + 1} ${doc.kind || '?'}/${(doc.metadata && doc.metadata.name) || '?'}`;
    if (typeof doc !== 'object' || Array.isArray(doc)) {
      failures.push(`${name}: not a mapping`);
      return;
    }
    const Model = MODELS[`${doc.apiVersion}/${doc.kind}`];
    if (!Model) {
      failures.push(`${name}: unknown apiVersion/kind ${doc.apiVersion}/${doc.kind}`);
      return;
    }
    if (!doc.metadata || !doc.metadata.name) failures.push(`${name}: metadata.name missing`);
    try {
      new Model(doc).validate();
    } catch (e) {
      const details = (e.errors || []).map((x) => `${x.instancePath || '/'} ${x.message}`);
      failures.push(`${name}: ${details.length ? details.join('; ') : e.message}`);
      return;
    }
    const extra = extraChecks(doc);
    if (extra.length) failures.push(`${name}: ${extra.join('; ')}`);
    else console.log(`ok   ${name} (${doc.apiVersion})`);
  });
  return failures;
}

function main(argv) {
  const [mode, ...args] = argv;
  if (mode === 'resources' && args.length === 1) {
    const k = yaml.load(fs.readFileSync(args[0], 'utf8'));
    if (!k || !Array.isArray(k.resources)) throw new Error(`${args[0]}: no resources list`);
    for (const r of k.resources) console.log(r);
    return 0;
  }
  if (mode === 'check' && args.length > 0) {
    let failures = [];
    for (const f of args) {
      const text = f === '-' ? fs.readFileSync(0, 'utf8') : fs.readFileSync(f, 'utf8');
      failures = failures.concat(checkStream(text, f === '-' ? '<stdin>' : f));
    }
    for (const f of failures) console.log(`FAIL ${f}`);
    return failures.length ? 1 : 0;
  }
  console.error('usage: validate.js resources KUSTOMIZATION | validate.js check FILE...|-');
  return 2;
}

process.exitCode = main(process.argv.slice(2));
