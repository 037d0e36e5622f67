import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { visibilityLimitsSchema, widensSensitiveAccess } from '../../src/consent/index.ts';

const limits = (input: Record<string, unknown>) => visibilityLimitsSchema.parse(input);

describe('widensSensitiveAccess: loosening any limit is widening', () => {
  const current = limits({ hiddenLabels: ['HIV', 'PSY'], from: '2020-01-01', until: '2021-12-31', resourceTypes: ['Condition', 'Observation'] });

  it('counts every way of showing more', () => {
    const widenings: [string, Record<string, unknown>][] = [
      ['un-hiding a label', { hiddenLabels: ['PSY'], from: '2020-01-01', until: '2021-12-31', resourceTypes: ['Condition', 'Observation'] }],
      ['dropping the start', { hiddenLabels: ['HIV', 'PSY'], until: '2021-12-31', resourceTypes: ['Condition', 'Observation'] }],
      ['an earlier start', { hiddenLabels: ['HIV', 'PSY'], from: '2019-12-31', until: '2021-12-31', resourceTypes: ['Condition', 'Observation'] }],
      ['dropping the end', { hiddenLabels: ['HIV', 'PSY'], from: '2020-01-01', resourceTypes: ['Condition', 'Observation'] }],
      ['a later end', { hiddenLabels: ['HIV', 'PSY'], from: '2020-01-01', until: '2022-01-01', resourceTypes: ['Condition', 'Observation'] }],
      ['dropping the date range', { hiddenLabels: ['HIV', 'PSY'], resourceTypes: ['Condition', 'Observation'] }],
      ['dropping the type list', { hiddenLabels: ['HIV', 'PSY'], from: '2020-01-01', until: '2021-12-31' }],
      ['adding a type', { hiddenLabels: ['HIV', 'PSY'], from: '2020-01-01', until: '2021-12-31', resourceTypes: ['Condition', 'Observation', 'Procedure'] }],
      ['swapping a type', { hiddenLabels: ['HIV', 'PSY'], from: '2020-01-01', until: '2021-12-31', resourceTypes: ['Condition', 'Procedure'] }],
    ];
    for (const [what, next] of widenings) assert.equal(widensSensitiveAccess(current, limits(next)), true, what);
  });

  it('lets every way of showing less, or the same, through without step-up', () => {
    const narrowings: [string, Record<string, unknown>][] = [
      ['the same', { hiddenLabels: ['HIV', 'PSY'], from: '2020-01-01', until: '2021-12-31', resourceTypes: ['Condition', 'Observation'] }],
      ['hiding one more label', { hiddenLabels: ['HIV', 'PSY', 'ETH'], from: '2020-01-01', until: '2021-12-31', resourceTypes: ['Condition', 'Observation'] }],
      ['a later start and an earlier end', { hiddenLabels: ['HIV', 'PSY'], from: '2020-06-01', until: '2021-06-30', resourceTypes: ['Condition', 'Observation'] }],
      ['one type fewer', { hiddenLabels: ['HIV', 'PSY'], from: '2020-01-01', until: '2021-12-31', resourceTypes: ['Observation'] }],
    ];
    for (const [what, next] of narrowings) assert.equal(widensSensitiveAccess(current, limits(next)), false, what);
    assert.equal(widensSensitiveAccess(limits({}), limits({ from: '2020-01-01', resourceTypes: ['Observation'] })), false, 'adding limits where there were none');
  });
});
