/**
 * Enrols an authenticator app for a test account the way a user would, with one twist: it confirms
 * with the previous time step's code, so the current step's code stays unused for the sign-in the
 * test goes on to do.
 */
import { generate } from 'otplib';
import { setTimeout as sleep } from 'node:timers/promises';
import type { MfaRepository } from '../../src/mfa/repository.ts';

const STEP_SECONDS = 30;
// The previous step's code is accepted only while "now minus one step" is still inside it; near the
// end of a step the confirmation could land in the next one and be refused, so wait that edge out.
const EDGE_SECONDS = 5;

export async function enrolTotp(mfa: Pick<MfaRepository, 'beginTotp' | 'confirmTotp'>, accountId: string): Promise<string> {
  const secret = await mfa.beginTotp(accountId);
  const intoStep = (Date.now() / 1000) % STEP_SECONDS;
  if (intoStep > STEP_SECONDS - EDGE_SECONDS) await sleep((STEP_SECONDS - intoStep) * 1000 + 50);
  const code = await generate({ secret, epoch: Math.floor(Date.now() / 1000) - STEP_SECONDS });
  if (!(await mfa.confirmTotp(accountId, code))) throw new Error('the authenticator app enrolment was refused');
  return secret;
}
