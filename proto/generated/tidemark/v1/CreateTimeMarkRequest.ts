// Original file: proto/tidemark/v1/control.proto


export interface CreateTimeMarkRequest {
  /**
   * Exactly one of volume and group.
   */
  'volume'?: (string);
  'group'?: (string);
  'label'?: (string);
  /**
   * Shell commands run by the agent (sh -c). With a quiesce hook the mark is
   * application-consistent.
   */
  'quiesce'?: (string);
  'thaw'?: (string);
  /**
   * Each hook's time limit; 0 means 60 s.
   */
  'hookTimeoutMs'?: (number);
  /**
   * When quiesce fails or times out, take a crash-consistent mark instead of
   * failing.
   */
  'allowCrashConsistent'?: (boolean);
  /**
   * Return once the barrier is taken, without waiting for the appliance.
   */
  'noWait'?: (boolean);
  /**
   * How long to wait for the appliance; 0 means 60 s.
   */
  'waitTimeoutMs'?: (number);
}

export interface CreateTimeMarkRequest__Output {
  /**
   * Exactly one of volume and group.
   */
  'volume': (string);
  'group': (string);
  'label': (string);
  /**
   * Shell commands run by the agent (sh -c). With a quiesce hook the mark is
   * application-consistent.
   */
  'quiesce': (string);
  'thaw': (string);
  /**
   * Each hook's time limit; 0 means 60 s.
   */
  'hookTimeoutMs': (number);
  /**
   * When quiesce fails or times out, take a crash-consistent mark instead of
   * failing.
   */
  'allowCrashConsistent': (boolean);
  /**
   * Return once the barrier is taken, without waiting for the appliance.
   */
  'noWait': (boolean);
  /**
   * How long to wait for the appliance; 0 means 60 s.
   */
  'waitTimeoutMs': (number);
}
