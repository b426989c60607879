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
