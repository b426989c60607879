// Times on the page are shown in the device's time zone (set in the setup wizard), so what
// a technician reads matches the site's clocks, whatever the laptop's own zone is.

let zone: string | undefined;

export function setZone(z?: string) {
  try {
    new Intl.DateTimeFormat(undefined, { timeZone: z });
    zone = z;
  } catch {
    zone = undefined;
  }
}

export const when = (t: number | string) => new Date(t).toLocaleString(undefined, { timeZone: zone });
export const clockTime = (t: number | string) => new Date(t).toLocaleTimeString(undefined, { timeZone: zone });

/** How far the site's clocks are ahead of UTC at instant `t` (ms); the browser's without a zone. */
function offsetAt(t: number): number {
  if (!zone) return -new Date(t).getTimezoneOffset() * 60000;
  const parts = new Intl.DateTimeFormat("en-US", {
    timeZone: zone,
    hourCycle: "h23",
    year: "numeric",
    month: "2-digit",
    day: "2-digit",
    hour: "2-digit",
    minute: "2-digit",
    second: "2-digit",
  }).formatToParts(new Date(t));
  const n = (type: string) => Number(parts.find((p) => p.type === type)?.value ?? 0);
  const wall = Date.UTC(n("year"), n("month") - 1, n("day"), n("hour"), n("minute"), n("second"));
  return wall - Math.floor(t / 1000) * 1000;
}

/** A `datetime-local` value, read as the site's wall-clock time, as an instant (ms; NaN if
 * empty or malformed). Every time field of the page means the site's time, as shown. */
export function fromSiteInput(value: string): number {
  const wall = Date.parse(`${value}Z`);
  if (Number.isNaN(wall)) return NaN;
  // Twice: the offset at the guess can differ from the offset at the answer near a DST change.
  const first = wall - offsetAt(wall);
  return wall - offsetAt(first);
}

/** An instant as a `datetime-local` value in the site's time. */
export function toSiteInput(ms: number): string {
  return new Date(ms + offsetAt(ms)).toISOString().slice(0, 19);
}

/** The zone the page's times are in, for labels. */
export const zoneName = () => zone ?? Intl.DateTimeFormat().resolvedOptions().timeZone;
