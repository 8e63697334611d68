// Original file: proto/tidemark/v1/admin.proto


export interface StatsReply {
  /**
   * One JSON object per volume, as `tidemark stats --json` prints it.
   */
  'json'?: (string);
}

export interface StatsReply__Output {
  /**
   * One JSON object per volume, as `tidemark stats --json` prints it.
   */
  'json': (string);
}
