// A seeded volume (Admin.SeedVolume, appliance/volume-seed.ts): the appliance
// holds its first point at SEED_SEQ before its agent ever connects. The
// agent's tap hands out seqs above it from the start (agent --seeded), so
// no write it captures, even before the Welcome raises its seqs, collides
// with the seed's point. One constant both sides agree on.
export const SEED_SEQ = 1
