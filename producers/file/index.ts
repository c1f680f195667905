/** History files as a TickSource (docs/files-and-replay.md): the public face of producers/file/. */
export { TS_UNITS, type TsUnit } from '../../shared/time.ts';
export { decodeRow, type DecodeContext } from './decoding.ts';
export { DEFAULT_COLUMNS, FIELDS, parseColumnMap, RowError, type ColumnMap, type Field } from './fields.ts';
export { loadFiles, type LoadOptions, type LoadSummary } from './loading.ts';
export { paced, type PaceOptions } from './pacing.ts';
export {
  EXCERPT_CHARS,
  LineSplitter,
  MAX_RECORD_CHARS,
  splitCsv,
  splitCsvInto,
  type Overlong,
} from './readers.ts';
export {
  FileSource,
  gzipLimit,
  sourceNameFromPath,
  type FileFormat,
  type FileSourceOptions,
  type FileSourceStats,
  type Rejection,
} from './source.ts';
export type { Validation } from './validation.ts';
