/** The Stargate version reported by both services (kept in step with package.json by a test). */
export const STARGATE_VERSION = '0.1.0'
