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
  /**
   * The NBD server requires STARTTLS with a certificate the appliance's CA
   * signed (the appliance has --tls-*): a client (a plan's VMs) must bring one.
   */
  'nbdTls'?: (boolean);
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
  /**
   * The NBD server requires STARTTLS with a certificate the appliance's CA
   * signed (the appliance has --tls-*): a client (a plan's VMs) must bring one.
   */
  'nbdTls': (boolean);
}
