/**
 * Compose's interpolation of docker-compose.yml values, for tests that read the file themselves: `$$` is a
 * literal `$`, `${NAME}` and `${NAME:-default}` come from the shell (empty or the default when unset or empty).
 * Any other `$` form is refused, so the file cannot start using one that these tests would misread.
 */
export function interpolate(value: string, shell: NodeJS.ProcessEnv = {}): string {
  return value.replace(/\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}$]*))?\}|\$/g, (m, name?: string, fallback?: string) => {
    if (m === '$$') return '$'
    if (name == null) throw new Error(`${value}: a $ form compose would read differently (use $$ for a literal $)`)
    const v = shell[name]
    return v != null && v !== '' ? v : (fallback ?? '')
  })
}
