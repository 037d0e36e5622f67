/**
 * Differential property test of the FHIR proxy against a real FHIR server nobody on this project
 * wrote (Medplum's router and memory repository, test/helpers/medplum-fhir-server.ts): random
 * worlds (patients, a practitioner, Medications, Observations, Conditions, DocumentReferences,
 * MedicationRequests and Encounters in several versions, some deleted, with labels, sensitive
 * codes, dates and contained resources in every form the spec lists) and random tokens (real
 * RFC 9068 JWTs checked against a JWKS by the real validator). Every read, vread, instance history
 * and search through the proxy is compared with an oracle written from /work/visibility-spec.md
 * alone (test/enforcement/oracle). DIFF_RUNS sets the number of worlds, DIFF_SEED replays one run,
 * DIFF_SHRINK=1 shrinks a failure to a small world (slow).
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { startRig, type Rig } from './oracle/proxy-rig.ts';
import { buildWorld, tokenSpec, worldSpec } from './oracle/worlds.ts';
import { checkWorld, type CheckStats } from './oracle/differential.ts';

const RUNS = Number(process.env.DIFF_RUNS ?? 24);
const SEED = process.env.DIFF_SEED !== undefined ? Number(process.env.DIFF_SEED) : Math.floor(Math.random() * 2 ** 31);

describe('FHIR proxy against Medplum, differential with the visibility oracle', () => {
  let rig: Rig;
  before(async () => {
    rig = await startRig();
  });
  after(async () => {
    await rig?.close();
  });

  it('shows exactly what the spec says, answers the hidden as the nonexistent, refuses bad input', async (t) => {
    const stats: CheckStats = { requests: 0 };
    const counts = fc.uniqueArray(fc.integer({ min: 1, max: 5 }), { minLength: 1, maxLength: 2 });
    t.diagnostic(`seed ${SEED} (DIFF_SEED=${SEED} replays this run)`);
    const details = await fc.check(
      fc.asyncProperty(worldSpec, tokenSpec, counts, async (spec, token, c) => {
        const world = buildWorld(spec, rig.fhir.url);
        const problems = await checkWorld(rig, world.histories, token, { counts: c, stats });
        if (problems.length) {
          throw new Error(`${problems.length} disagreement(s):\n  ${problems.join('\n  ')}\ntoken: ${JSON.stringify(token)}\nworld: ${JSON.stringify(world.histories)}`);
        }
      }),
      { numRuns: RUNS, seed: SEED, endOnFailure: process.env.DIFF_SHRINK !== '1' },
    );
    if (details.failed) {
      const error = details.errorInstance instanceof Error ? details.errorInstance.message : String(details.errorInstance);
      assert.fail(`differential failure, seed ${SEED} path ${details.counterexamplePath} (DIFF_SEED=${SEED} replays it), after ${details.numRuns} world(s):\n${error}`);
    }
    t.diagnostic(`${RUNS} worlds, ${stats.requests} requests through the proxy`);
  });
});
