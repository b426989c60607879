// The draft sequence list: uninterrupted recording periods an operator marked on the
// Recordings timeline, kept in the browser (it survives reloads) until added to a project.

export interface DraftSequence {
  camera: string;
  from: string;
  to: string;
}

const KEY = "veil.incident-draft";

export function readDraft(store: Pick<Storage, "getItem"> = localStorage): DraftSequence[] {
  try {
    const v = JSON.parse(store.getItem(KEY) ?? "[]");
    return Array.isArray(v) ? v.filter((s) => s && typeof s.camera === "string" && typeof s.from === "string" && typeof s.to === "string") : [];
  } catch {
    return [];
  }
}

export function writeDraft(list: DraftSequence[], store: Pick<Storage, "setItem"> = localStorage) {
  store.setItem(KEY, JSON.stringify(list));
}

/** Adds a sequence unless the same one is already there; returns the list. */
export function addToDraft(list: DraftSequence[], s: DraftSequence): DraftSequence[] {
  return list.some((x) => x.camera === s.camera && x.from === s.from && x.to === s.to) ? list : [...list, s];
}
