// Original file: proto/tidemark/v1/admin.proto


export interface AcceptGenerationRequest {
  'volume'?: (string);
  /**
   * The generation the refused hello announced; "" accepts the one waiting.
   */
  'generation'?: (string);
}

export interface AcceptGenerationRequest__Output {
  'volume': (string);
  /**
   * The generation the refused hello announced; "" accepts the one waiting.
   */
  'generation': (string);
}
