// The tablet's and the manager's words in Turkish and English: the browser's language first, then the user's pick.

const LANG_KEY = "shopfloor.lang";
export const LANGUAGES = ["tr", "en"];

const WORDS = {
  en: {
    "nav.machines": "Machines",
    "nav.tablet": "My stages",
    "nav.manager": "Manager",
    "nav.logout": "Log out",
    "lang.switch": "Türkçe",
    "tablet.title": "My stages",
    "tablet.none": "No stages assigned to you.",
    "tablet.back": "← My stages",
    "tablet.load_failed": "Could not load your stages: {error}",
    "status.planned": "Planned",
    "status.in_progress": "Running",
    "status.paused": "Paused",
    "status.done": "Done",
    "action.start": "Start",
    "action.pause": "Pause",
    "action.resume": "Resume",
    "action.done": "Done",
    "action.counts": "Report counts",
    "action.issue": "Report issue",
    "action.classify": "Classify stop",
    "pause.reason": "Reason for the pause",
    "pause.need_reason": "Say why the stage pauses.",
    "qty.title": "Quantities",
    "qty.good": "Good quantity",
    "qty.hint": "Report counts: good parts since the last report. Done: the stage's total.",
    "qty.scrap": "Scrap",
    "qty.add_scrap": "+ Scrap line",
    "qty.remove": "Remove",
    "qty.scrap_reason": "Scrap reason",
    "qty.scrap_qty": "Scrap quantity",
    "qty.invalid": "Quantities must be whole numbers, scrap lines need a reason and a quantity above zero.",
    "issue.title": "Report an issue",
    "issue.type": "Type",
    "issue.description": "What happened?",
    "issue.need_all": "Pick a type and describe the issue.",
    "downtime.title": "Stops of the machine",
    "downtime.none": "No unclassified stops.",
    "downtime.no_machine": "This stage has no machine.",
    "downtime.open": "still stopped",
    "downtime.pick_category": "Why did it stop?",
    "downtime.pick_reason": "Reason",
    "category.planned_stop": "Planned stop",
    "category.availability": "Availability loss",
    "category.performance": "Performance loss",
    "category.quality": "Quality loss",
    "pending.title": "Waiting to be sent ({count})",
    "pending.offline": "Offline: actions are kept and sent in order when the network returns.",
    "pending.failed": "Refused by the server: {label} — {error}",
    sent: "Sent: {label}",
    queued: "Queued (offline): {label}",
    "manager.title": "Manager",
    "manager.machine": "Machine",
    "manager.days": "Last days",
    "manager.by_shift": "By shift",
    "manager.by_day": "By day",
    "manager.no_calendar": "No shift calendar: OEE by shift needs one (days are 24 hours).",
    "manager.period": "Period",
    "manager.planned": "Planned (min)",
    "manager.unclassified": "Unclassified (min)",
    "manager.total": "Total",
    "manager.pareto": "Losses (Pareto, min)",
    "manager.no_losses": "No losses in this period.",
    "manager.load_failed": "Could not load the figures: {error}",
    "manager.no_machines": "No machines yet.",
    "oee.availability": "Availability",
    "oee.performance": "Performance",
    "oee.quality": "Quality",
    "oee.oee": "OEE",
    "reason.unclassified": "Unclassified",
    minutes: "{n} min",
  },
  tr: {
    "nav.machines": "Makineler",
    "nav.tablet": "İşlerim",
    "nav.manager": "Yönetici",
    "nav.logout": "Çıkış",
    "lang.switch": "English",
    "tablet.title": "İşlerim",
    "tablet.none": "Size atanmış iş yok.",
    "tablet.back": "← İşlerim",
    "tablet.load_failed": "İşleriniz yüklenemedi: {error}",
    "status.planned": "Planlandı",
    "status.in_progress": "Çalışıyor",
    "status.paused": "Duraklatıldı",
    "status.done": "Bitti",
    "action.start": "Başlat",
    "action.pause": "Duraklat",
    "action.resume": "Devam et",
    "action.done": "Bitir",
    "action.counts": "Adet bildir",
    "action.issue": "Sorun bildir",
    "action.classify": "Duruşu sınıflandır",
    "pause.reason": "Duraklatma nedeni",
    "pause.need_reason": "Neden duraklattığınızı yazın.",
    "qty.title": "Adetler",
    "qty.good": "Sağlam adet",
    "qty.hint": "Adet bildir: son bildirimden bu yana sağlam adet. Bitir: işin toplamı.",
    "qty.scrap": "Hurda",
    "qty.add_scrap": "+ Hurda satırı",
    "qty.remove": "Kaldır",
    "qty.scrap_reason": "Hurda nedeni",
    "qty.scrap_qty": "Hurda adedi",
    "qty.invalid": "Adetler tam sayı olmalı; her hurda satırının nedeni ve sıfırdan büyük adedi olmalı.",
    "issue.title": "Sorun bildir",
    "issue.type": "Tür",
    "issue.description": "Ne oldu?",
    "issue.need_all": "Bir tür seçin ve sorunu yazın.",
    "downtime.title": "Makinenin duruşları",
    "downtime.none": "Sınıflandırılmamış duruş yok.",
    "downtime.no_machine": "Bu işin makinesi yok.",
    "downtime.open": "hâlâ duruyor",
    "downtime.pick_category": "Neden durdu?",
    "downtime.pick_reason": "Neden",
    "category.planned_stop": "Planlı duruş",
    "category.availability": "Kullanılabilirlik kaybı",
    "category.performance": "Performans kaybı",
    "category.quality": "Kalite kaybı",
    "pending.title": "Gönderilmeyi bekliyor ({count})",
    "pending.offline": "Çevrimdışı: işlemler saklanıyor, ağ gelince sırayla gönderilecek.",
    "pending.failed": "Sunucu reddetti: {label} — {error}",
    sent: "Gönderildi: {label}",
    queued: "Sırada (çevrimdışı): {label}",
    "manager.title": "Yönetici",
    "manager.machine": "Makine",
    "manager.days": "Son günler",
    "manager.by_shift": "Vardiyaya göre",
    "manager.by_day": "Güne göre",
    "manager.no_calendar": "Vardiya takvimi yok: vardiya OEE'si için takvim gerekir (günler 24 saat).",
    "manager.period": "Dönem",
    "manager.planned": "Planlı (dk)",
    "manager.unclassified": "Sınıflandırılmamış (dk)",
    "manager.total": "Toplam",
    "manager.pareto": "Kayıplar (Pareto, dk)",
    "manager.no_losses": "Bu dönemde kayıp yok.",
    "manager.load_failed": "Rakamlar yüklenemedi: {error}",
    "manager.no_machines": "Henüz makine yok.",
    "oee.availability": "Kullanılabilirlik",
    "oee.performance": "Performans",
    "oee.quality": "Kalite",
    "oee.oee": "OEE",
    "reason.unclassified": "Sınıflandırılmamış",
    minutes: "{n} dk",
  },
};

/** The language the browser asks for when it is one of ours, English otherwise. */
function browserLanguage() {
  for (const tag of navigator.languages || [navigator.language || "en"]) {
    const base = String(tag).slice(0, 2).toLowerCase();
    if (LANGUAGES.includes(base)) return base;
  }
  return "en";
}

let current = (() => {
  const chosen = localStorage.getItem(LANG_KEY);
  return LANGUAGES.includes(chosen) ? chosen : browserLanguage();
})();

/** "tr" or "en". */
export function language() {
  return current;
}

/** Switch the language (kept in this browser) until switched back. */
export function setLanguage(lang) {
  if (!LANGUAGES.includes(lang)) return;
  current = lang;
  localStorage.setItem(LANG_KEY, lang);
  document.documentElement.lang = lang;
}

/** The text of `key` in the current language, with `{name}` filled from `vars`. */
export function t(key, vars = {}) {
  const text = WORDS[current][key] ?? WORDS.en[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (_, name) => (name in vars ? String(vars[name]) : `{${name}}`));
}

/** The label of an API object with `label_tr` / `label_en` (or `labels: {tr, en}`), in the current language. */
export function labelOf(item) {
  if (!item) return "";
  if (item.labels) return item.labels[current] || item.labels.en || item.code;
  return item[`label_${current}`] || item.label_en || item.code;
}

/** Fill every `[data-i18n]` element under `root` with its text. */
export function translate(root) {
  for (const element of root.querySelectorAll("[data-i18n]")) element.textContent = t(element.dataset.i18n);
}
