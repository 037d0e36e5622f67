import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { DatabaseUnavailableError, isDatabaseUnavailable } from '../../src/db/index.ts';

const withCode = (code: string, message = 'failed') => Object.assign(new Error(message), { code });

describe('isDatabaseUnavailable', () => {
  const unavailable: [string, unknown][] = [
    ['a refused connection', withCode('ECONNREFUSED', 'connect ECONNREFUSED 127.0.0.1:5432')],
    ['a reset connection', withCode('ECONNRESET', 'read ECONNRESET')],
    ['refused on every address', new AggregateError([withCode('ECONNREFUSED'), withCode('ECONNREFUSED')], 'connect failed')],
    ['a connection exception SQLSTATE', withCode('08006', 'connection failure')],
    ['the server shutting down', withCode('57P01', 'terminating connection due to administrator command')],
    ['the server starting up', withCode('57P03', 'the database system is starting up')],
    ['statement_timeout', withCode('57014', 'canceling statement due to statement timeout')],
    ['pg losing the connection, as knex reports it', new Error('select 1 - Connection terminated unexpectedly')],
    ['pg giving up on a query', new Error('select 1 - Query read timeout')],
    ['a connect timeout', new Error('Connection terminated due to connection timeout')],
    ['pg.Client giving up on connecting (what a pool opening a connection reports)', new Error('timeout expired')],
    ['knex waiting for a pooled connection', Object.assign(new Error('Knex: Timeout acquiring a connection.'), { name: 'KnexTimeoutError' })],
    ['a cause further down', new Error('could not load the client', { cause: withCode('ECONNREFUSED') })],
    ['the typed error itself', new DatabaseUnavailableError(withCode('ECONNREFUSED'))],
  ];
  for (const [what, err] of unavailable) it(`recognises ${what}`, () => assert.equal(isDatabaseUnavailable(err), true));

  const other: [string, unknown][] = [
    ['a unique violation', withCode('23505', 'duplicate key value violates unique constraint')],
    // The failed SQL (with its values) leads knex's message: a value must not make it look like an outage.
    ['a constraint failure whose SQL mentions the words', withCode('23514', "insert into notes values ('Connection terminated unexpectedly') - new row violates check constraint")],
    ['another timeout that merely mentions the words', new Error('the lock wait timeout expired while sealing')],
    ['a programming error', new TypeError("Cannot read properties of undefined (reading 'id')")],
    ['a thrown string', 'ECONNREFUSED'],
    ['nothing', undefined],
  ];
  for (const [what, err] of other) it(`does not take ${what} for an outage`, () => assert.equal(isDatabaseUnavailable(err), false));

  it('renders as the OAuth error temporarily_unavailable, keeping the driver error as its cause', () => {
    const cause = withCode('ECONNREFUSED');
    const err = new DatabaseUnavailableError(cause);
    assert.equal(err.message, 'temporarily_unavailable');
    assert.equal(err.statusCode, 503);
    assert.equal(err.expose, true);
    assert.equal(err.cause, cause);
  });
});
