/**
 * When a representation holds: a link from the representative to an account that is a patient's
 * and is not disabled. The one definition behind both the check made before a change on a
 * patient's behalf and the filter of what a representative may still read.
 */
import type { Knex } from 'knex';

/** The `representatives as r` links that hold now, joined with the patient's account as `a`. */
export function standingRepresentations(db: Knex | Knex.Transaction): Knex.QueryBuilder {
  return db('representatives as r').join('accounts as a', 'a.id', 'r.patient_account_id').where('a.role', 'patient').whereNull('a.disabled_at');
}
