// The cron agreement table: next fire times computed by cron-parser (the version bullmq pins,
// see package.json), the expected values corral's engine/cron.py must reproduce.
//
// Usage (from the repository root):
//   node tests/interop/node/cron_table.mjs > tests/engine/data/cron_table.json
//       the standard table: every pattern of PATTERNS in every zone of ZONES, from the general
//       starts and the zone's own DST transitions, NEXT_COUNT successive next() calls each
//   node tests/interop/node/cron_table.mjs '{"cases": [{"pattern": "...", "tz": "...", "start": ms}], "count": 5}'
//       the same for the given cases
//
// The calls are the ones BullMQ's default repeat strategy makes: parse(pattern, {tz, currentDate}),
// then next(). An error (at parse or at next) ends the row with its message.
import { createRequire } from 'node:module';
import { CronExpressionParser } from 'cron-parser';

const require = createRequire(import.meta.url);
const CRON_PARSER_VERSION = require('cron-parser/package.json').version;

export const NEXT_COUNT = 5;

export const PATTERNS = [
  // five fields (second = 0)
  '* * * * *',
  '*/5 * * * *',
  '0 * * * *',
  '30 * * * *',
  '15,45 * * * *',
  '0 */2 * * *',
  '0 0 * * *',
  '30 2 * * *',
  '0 2 * * *',
  '0 3 * * *',
  '15 1,2,3 * * *',
  '45 1 * * *',
  '0 0,12 * * *',
  '5 4 * * sun',
  '0 9 * * 1-5',
  '0 9 * * MON-FRI',
  '0 22 * * 1,3,5',
  '0 0 1 * *',
  '0 0 1,15 * *',
  '0 12 L * *',
  '0 8 * * 5L',
  '0 8 * * 1#2',
  '0 8 * * FRI#3',
  '0 0 13 * 5',
  '0 0 */2 * 1',
  '0 0 1-7 * 1',
  '0 0 * JAN,JUL *',
  '0 6 1 */3 *',
  '0 0 29 2 *',
  '0 0 31 * *',
  '30 0-6/2 * * *',
  '10-20/5 * * * *',
  '0 0 ? * MON',
  '0 0 15 * ?',
  '0 12 * * 7',
  '0 12 * * 0',
  '59 23 * * *',
  '0,30 * * * *',
  '0 0 * JUL sun',
  '0 0 * * 6,0',
  '*/15 9-17 * * 1-5',
  '0 4 8-14 * *',
  // six fields: second first
  '* * * * * *',
  '*/10 * * * * *',
  '0 * * * * *',
  '30 * * * * *',
  '0 15 3 * * *',
  '0 30 2 * * *',
  '0 0 2 * * *',
  '0 0 * * * *',
  '0 30 * * * *',
  '15 */20 * * * *',
  '0 0 12 * * 1-5',
  '0 0 0 L * *',
  '45 59 23 31 12 *',
  '0 0 1 1 * *',
  '0 0 9 ? * TUE',
  '0 0 0 * * 2L',
  // four fields: the leading ones default to "0 *"
  '15 10 * *',
  // aliases
  '@hourly',
  '@daily',
  '@weekly',
  '@monthly',
  '@yearly',
  '@weekdays',
  '@weekends',
  // refused by cron-parser (every row must be an error)
  '0 0 0 * * * *',
  '* * * * 8',
  '60 * * * *',
  '* * 32 * *',
  '0 0 30 2 *',
  'a b c d e',
];

// The zones, each with the instants of its DST transitions in 2026 (none for fixed zones).
export const ZONES = {
  UTC: [],
  'Asia/Kolkata': [],
  'Europe/Paris': ['2026-03-29T01:00:00Z', '2026-10-25T01:00:00Z'],
  'America/New_York': ['2026-03-08T07:00:00Z', '2026-11-01T06:00:00Z'],
  'Australia/Sydney': ['2026-04-04T16:00:00Z', '2026-10-03T16:00:00Z'],
  'Australia/Lord_Howe': ['2026-04-04T15:00:00Z', '2026-10-03T15:30:00Z'],
  'America/St_Johns': ['2026-03-08T05:30:00Z', '2026-11-01T04:30:00Z'],
  'Pacific/Chatham': ['2026-04-04T14:00:00Z', '2026-09-26T14:00:00Z'],
};

// Starts used in every zone: an ordinary day with milliseconds, a leap day, a year's end.
const GENERAL_STARTS = ['2026-01-15T10:07:23.456Z', '2028-02-28T23:59:59Z', '2026-12-31T23:59:30Z'];
// Starts relative to each DST transition, in minutes: a day, 3 h and 30 min before, exactly on it.
const TRANSITION_OFFSETS = [-24 * 60, -180, -30, 0];

export function standardCases() {
  const cases = [];
  for (const [tz, transitions] of Object.entries(ZONES)) {
    const starts = GENERAL_STARTS.map((iso) => Date.parse(iso));
    for (const iso of transitions) {
      for (const minutes of TRANSITION_OFFSETS) {
        starts.push(Date.parse(iso) + minutes * 60_000);
      }
    }
    for (const pattern of PATTERNS) {
      for (const start of starts) {
        cases.push({ pattern, tz, start });
      }
    }
  }
  return cases;
}

export function nextTimes({ pattern, tz, start }, count) {
  const row = { pattern, tz, start, next: [] };
  let expression;
  try {
    expression = CronExpressionParser.parse(pattern, { tz, currentDate: new Date(start) });
  } catch (error) {
    row.error = `parse: ${error.message}`;
    return row;
  }
  for (let i = 0; i < count; i++) {
    try {
      row.next.push(expression.next().getTime());
    } catch (error) {
      row.error = `next: ${error.message}`;
      break;
    }
  }
  return row;
}

function main() {
  const request = process.argv[2] ? JSON.parse(process.argv[2]) : {};
  const count = request.count ?? NEXT_COUNT;
  const cases = request.cases ?? standardCases();
  const rows = cases.map((one) => nextTimes(one, count));
  // One row per line: the checked-in table diffs readably.
  const header = {
    generator: 'node tests/interop/node/cron_table.mjs > tests/engine/data/cron_table.json',
    cronParser: CRON_PARSER_VERSION,
    count,
  };
  const lines = rows.map((row) => '    ' + JSON.stringify(row));
  process.stdout.write(
    `{\n  "header": ${JSON.stringify(header)},\n  "rows": [\n${lines.join(',\n')}\n  ]\n}\n`,
  );
}

main();
