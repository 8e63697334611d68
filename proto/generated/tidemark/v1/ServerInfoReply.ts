// Original file: proto/tidemark/v1/admin.proto


export interface ServerInfoReply {
  'applianceId'?: (string);
  /**
   * The unix socket of `appliance --nbd unix:PATH` ("" if none).
   */
  'nbdUnix'?: (string);
  /**
   * HOST:PORT of `appliance --nbd tcp:HOST:PORT` ("" if none).
   */
  'nbdTcp'?: (string);
}

export interface ServerInfoReply__Output {
  'applianceId': (string);
  /**
   * The unix socket of `appliance --nbd unix:PATH` ("" if none).
   */
  'nbdUnix': (string);
  /**
   * HOST:PORT of `appliance --nbd tcp:HOST:PORT` ("" if none).
   */
  'nbdTcp': (string);
}
